"""Canary analysis: is the canary's live success rate worse than the champion's?

The test is Fisher's exact test, one-sided (H1: the canary succeeds less often), on the 2x2 table
of successes and failures of each arm; exact, so sound at the small counts of a short canary.
A guardrail comes first, once both arms have `guardrail_episodes`: roll back if the canary's
planner rejects a larger share of its imagined candidates than the champion's, by more than
`max_rejection_increase`. Rejections come by the dozen per episode, so a broken IDM or world model
shows there long before success rates, which at a few percent need hundreds of episodes to tell
apart. Then, once both arms have `min_episodes`:
- roll back if the canary is worse at level `alpha`;
- else promote if the canary's rate is at least the champion's minus `margin`;
- else roll back (not shown worse, but not as good either).
Before that, the verdict is "wait".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import pydantic.dataclasses
from pydantic import Field

from infra.contracts.rollout import CanaryDecision
from infra.stats import wilson


@pydantic.dataclasses.dataclass(frozen=True)
class AnalysisConfig:
    min_episodes: Annotated[int, Field(ge=1)] = 30
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    margin: Annotated[float, Field(ge=0, lt=1)] = 0.0
    guardrail_episodes: Annotated[int, Field(ge=1)] = 5
    max_rejection_increase: Annotated[float, Field(ge=0, le=1)] = 0.25  # share of candidates, absolute


@dataclass(frozen=True)
class Arm:
    successes: int
    episodes: int
    rejected: int = 0  # imagined candidates the planner rejected, over all the arm's episodes
    candidates: int = 0

    @property
    def rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    @property
    def rejection_rate(self) -> float:
        return self.rejected / self.candidates if self.candidates else 0.0

    def __add__(self, other: Arm) -> Arm:
        return Arm(
            self.successes + other.successes,
            self.episodes + other.episodes,
            self.rejected + other.rejected,
            self.candidates + other.candidates,
        )


@dataclass(frozen=True)
class Verdict:
    decision: CanaryDecision
    p_worse: float
    canary: Arm
    champion: Arm
    reason: str

    def as_dict(self) -> dict:
        return {
            "decision": self.decision.value,
            "p_worse": round(self.p_worse, 5),
            "reason": self.reason,
            "test": "Fisher exact, one-sided (canary worse)",
            **{
                f"{name}_{k}": v
                for name, arm in (("canary", self.canary), ("champion", self.champion))
                for k, v in (
                    ("successes", arm.successes),
                    ("episodes", arm.episodes),
                    ("rate", round(arm.rate, 4)),
                    ("ci95", wilson(arm.successes, arm.episodes)),
                    ("rejection_rate", round(arm.rejection_rate, 4)),
                )
            },
        }


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_less(canary: Arm, champion: Arm) -> float:
    """P(canary successes <= observed) under the hypergeometric law with both margins fixed."""
    n1, n2 = canary.episodes, champion.episodes
    total_s = canary.successes + champion.successes
    lo, hi = max(0, total_s - n2), min(total_s, n1)
    denominator = _log_comb(n1 + n2, total_s)
    return min(
        1.0,
        sum(
            math.exp(_log_comb(n1, x) + _log_comb(n2, total_s - x) - denominator)
            for x in range(lo, min(canary.successes, hi) + 1)
        ),
    )


def analyse(canary: Arm, champion: Arm, config: AnalysisConfig = AnalysisConfig()) -> Verdict:
    p = fisher_less(canary, champion) if canary.episodes and champion.episodes else 1.0
    excess = canary.rejection_rate - champion.rejection_rate
    if min(canary.episodes, champion.episodes) >= config.guardrail_episodes and excess > config.max_rejection_increase:
        return Verdict(
            CanaryDecision.rollback,
            p,
            canary,
            champion,
            f"guardrail: canary rejects {canary.rejection_rate:.0%} of its candidates, "
            f"champion {champion.rejection_rate:.0%}",
        )
    if min(canary.episodes, champion.episodes) < config.min_episodes:
        need = config.min_episodes
        return Verdict(
            CanaryDecision.wait,
            p,
            canary,
            champion,
            f"need {need} episodes per arm, have {canary.episodes} and {champion.episodes}",
        )
    if p < config.alpha:
        return Verdict(
            CanaryDecision.rollback,
            p,
            canary,
            champion,
            f"canary worse than champion (Fisher p={p:.4f} < {config.alpha})",
        )
    if canary.rate >= champion.rate - config.margin:
        return Verdict(
            CanaryDecision.promote,
            p,
            canary,
            champion,
            f"canary {canary.rate:.1%} vs champion {champion.rate:.1%}, not worse (p={p:.3f})",
        )
    return Verdict(
        CanaryDecision.rollback,
        p,
        canary,
        champion,
        f"canary {canary.rate:.1%} below champion {champion.rate:.1%} by more than {config.margin:.1%}",
    )
