"""Canary analysis: is the canary shown not worse than the champion, shown worse, or neither yet?

A guardrail comes first, once both arms have `guardrail_episodes`: roll back if the canary's
planner rejects a larger share of its imagined candidates than the champion's, by more than
`max_rejection_increase`. Rejections come by the dozen per episode, so a broken IDM or world model
shows there long before success rates, which at a few percent need hundreds of episodes to tell
apart. Then, once both arms have `min_episodes`:
- roll back if the canary is worse: Fisher's exact test, one-sided, at level `alpha` (exact, so
  sound at the small counts of a short canary);
- promote if it is shown not worse by more than the allowed shortfall: the one-sided (1 - alpha)
  lower bound on canary rate minus champion rate (Newcombe's hybrid score interval, from the two
  Wilson intervals) is above minus the smaller of `margin` (points) and `relative_margin` times the
  champion's rate. The relative part is what keeps the test meaningful at low rates: a 10-point
  margin against a champion at 5% promotes a canary that never succeeds (0/26 against 4/86 did);
  at 5% the canary may lose at most a quarter of that, 1.25 points, and a short canary cannot show
  it, so the champion is kept;
- otherwise wait for more episodes; when the canary's time is up (`final`), or both arms reach
  `max_episodes`, keep the champion: a canary that cannot be told apart is not promoted.
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass
from typing import Annotated

import pydantic.dataclasses
from pydantic import Field

from infra.contracts.rollout import CanaryDecision
from infra.stats import wilson


@pydantic.dataclasses.dataclass(frozen=True)
class AnalysisConfig:
    min_episodes: Annotated[int, Field(ge=1)] = 30
    max_episodes: Annotated[int, Field(ge=1)] = 400  # per arm: past this the champion is kept
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    margin: Annotated[float, Field(ge=0, lt=1)] = 0.10  # how much worse than the champion still counts as not worse
    relative_margin: Annotated[float, Field(ge=0, le=1)] = 0.25  # ... and at most this share of the champion's rate
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
    lower_bound: float  # one-sided lower confidence bound on canary rate minus champion rate
    canary: Arm
    champion: Arm
    reason: str

    def as_dict(self) -> dict:
        return {
            "decision": self.decision.value,
            "p_worse": round(self.p_worse, 5),
            "difference_lower_bound": round(self.lower_bound, 4),
            "reason": self.reason,
            "test": "Fisher exact, one-sided (canary worse); Newcombe lower bound (not worse by the margin)",
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


def difference_lower_bound(canary: Arm, champion: Arm, alpha: float) -> float:
    """One-sided (1 - alpha) lower bound on canary rate minus champion rate (Newcombe's method 10)."""
    z = statistics.NormalDist().inv_cdf(1 - alpha)
    p1, p2 = canary.rate, champion.rate
    l1, _ = wilson(canary.successes, canary.episodes, z)
    _, u2 = wilson(champion.successes, champion.episodes, z)
    return p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)


def allowed_shortfall(champion: Arm, config: AnalysisConfig) -> float:
    return min(config.margin, config.relative_margin * champion.rate)


def analyse(canary: Arm, champion: Arm, config: AnalysisConfig = AnalysisConfig(), final: bool = False) -> Verdict:
    """`final`: the canary's time is up, so what would be "wait" is "keep"."""
    p = fisher_less(canary, champion) if canary.episodes and champion.episodes else 1.0
    bound = difference_lower_bound(canary, champion, config.alpha)
    verdict = functools.partial(Verdict, p_worse=p, lower_bound=bound, canary=canary, champion=champion)
    n = min(canary.episodes, champion.episodes)
    shortfall = allowed_shortfall(champion, config)
    excess = canary.rejection_rate - champion.rejection_rate
    if n >= config.guardrail_episodes and excess > config.max_rejection_increase:
        return verdict(
            CanaryDecision.rollback,
            reason=f"guardrail: canary rejects {canary.rejection_rate:.0%} of its candidates, "
            f"champion {champion.rejection_rate:.0%}",
        )
    if n >= config.min_episodes:
        if p < config.alpha:
            return verdict(
                CanaryDecision.rollback, reason=f"canary worse than champion (Fisher p={p:.4f} < {config.alpha})"
            )
        if bound > -shortfall:
            return verdict(
                CanaryDecision.promote,
                reason=f"canary {canary.rate:.1%} vs champion {champion.rate:.1%}: not worse by more than "
                f"{shortfall:.1%} (lower bound {bound:+.3f})",
            )
    if final or n >= config.max_episodes:
        return verdict(
            CanaryDecision.keep,
            reason=f"cannot tell after {canary.episodes} and {champion.episodes} episodes "
            f"(canary {canary.rate:.1%}, champion {champion.rate:.1%}, lower bound {bound:+.3f}); champion kept",
        )
    if n < config.min_episodes:
        reason = f"need {config.min_episodes} episodes per arm, have {canary.episodes} and {champion.episodes}"
    else:
        reason = f"not yet shown not worse: lower bound {bound:+.3f} against margin -{shortfall:.3f}"
    return verdict(CanaryDecision.wait, reason=reason)
