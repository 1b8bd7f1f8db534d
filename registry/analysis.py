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
- keep the champion at once when promotion has become futile: the predictive chance that the
  canary is shown not worse by the canary's end (below) is under `futility`. Each
  arm's rate is drawn from its Beta posterior (Jeffreys prior) and its remaining episodes from the
  beta-binomial that follows; the chance is the weight of the outcomes whose lower bound clears
  the shortfall. A canary at a few percent against a champion at a few percent, which only a
  canary shown better could pass, would otherwise hold half the fleet until its end. The
  stop can only keep, never promote, so it adds no false promotion (a binding futility rule);
- otherwise wait for more episodes; when the canary's time is up (`final`), or its episodes
  measure the difference as precisely as `max_episodes` an arm would (1/n1 + 1/n2 <= 2/max: with
  even arms, max each; with 2 canary robots of 8, about 40 against 120), keep the champion: a
  canary that cannot be told apart is not promoted. Robots join an arm by a hash, so a small
  fleet splits unevenly, and waiting for the smaller arm to reach `max_episodes` would buy little
  precision for much time.
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import pydantic.dataclasses
from pydantic import Field

from infra.contracts.rollout import CanaryDecision
from infra.stats import wilson, wilson_bounds


@pydantic.dataclasses.dataclass(frozen=True)
class AnalysisConfig:
    min_episodes: Annotated[int, Field(ge=1)] = 30
    max_episodes: Annotated[int, Field(ge=1)] = 400  # per arm, or as precise: past this the champion is kept
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    margin: Annotated[float, Field(ge=0, lt=1)] = 0.10  # how much worse than the champion still counts as not worse
    relative_margin: Annotated[float, Field(ge=0, le=1)] = 0.25  # ... and at most this share of the champion's rate
    guardrail_episodes: Annotated[int, Field(ge=1)] = 5
    max_rejection_increase: Annotated[float, Field(ge=0, le=1)] = 0.25  # share of candidates, absolute
    # keep once the predictive chance of promotion by the canary's end falls under this; 0: never
    futility: Annotated[float, Field(ge=0, lt=1)] = 0.05


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


def _predictive(arm: Arm, remaining: int, points: int = 513) -> tuple[np.ndarray, np.ndarray]:
    """More successes in `remaining` episodes and their chances: the beta-binomial from the arm's
    Jeffreys posterior Beta(s + 1/2, n - s + 1/2), summed into at most `points` bins (each at its
    mean) so that a canary allowed 100,000 episodes costs what one allowed 500 does."""
    a, b = arm.successes + 0.5, arm.episodes - arm.successes + 0.5
    x = np.arange(remaining + 1, dtype=float)
    head = x[:-1]  # P(x + 1) / P(x) = (r - x)(x + a) / ((x + 1)(r - x - 1 + b))
    steps = np.log((remaining - head) * (head + a)) - np.log((head + 1) * (remaining - head - 1 + b))
    first = math.lgamma(remaining + b) + math.lgamma(a + b) - math.lgamma(remaining + a + b) - math.lgamma(b)
    chance = np.exp(first + np.concatenate(([0.0], np.cumsum(steps))))
    if remaining + 1 <= points:
        return x, chance
    starts = np.unique(np.linspace(0, remaining + 1, points, endpoint=False).astype(int))
    mass = np.add.reduceat(chance, starts)
    return np.add.reduceat(chance * x, starts) / np.maximum(mass, np.finfo(float).tiny), mass


def at_end(canary: Arm, champion: Arm, config: AnalysisConfig) -> bool:
    """The arms measure the difference as precisely as `max_episodes` each would (and each has
    the minimum)."""
    if min(canary.episodes, champion.episodes) < max(1, config.min_episodes):
        return False
    return 1 / canary.episodes + 1 / champion.episodes <= 2 / config.max_episodes + 1e-12


def horizon(canary: Arm, champion: Arm, config: AnalysisConfig) -> tuple[int, int]:
    """Each arm's episodes at the canary's end, both growing at their present ratio."""
    n1, n2 = canary.episodes, champion.episodes
    grow = max(1.0, (1 / n1 + 1 / n2) * config.max_episodes / 2)
    return max(n1, math.ceil(n1 * grow - 1e-9)), max(n2, math.ceil(n2 * grow - 1e-9))


def promotion_chance(canary: Arm, champion: Arm, config: AnalysisConfig) -> float:
    """The predictive chance that the canary's lower bound clears the allowed shortfall at the
    canary's end (`horizon`; both arms need episodes). It leaves out Fisher's rollback, which can
    only lower the chance of a promotion, so a stop below `futility` is sure."""
    z = statistics.NormalDist().inv_cdf(1 - config.alpha)
    n1, n2 = horizon(canary, champion, config)
    (x1, w1), (x2, w2) = _predictive(canary, n1 - canary.episodes), _predictive(champion, n2 - champion.episodes)
    p1, p2 = (canary.successes + x1) / n1, (champion.successes + x2) / n2
    l1, _ = wilson_bounds(canary.successes + x1, n1, z)
    _, u2 = wilson_bounds(champion.successes + x2, n2, z)
    bound = p1[:, None] - p2[None, :] - np.sqrt((p1 - l1)[:, None] ** 2 + (u2 - p2)[None, :] ** 2)
    shortfall = np.minimum(config.margin, config.relative_margin * p2)[None, :]
    return float(min(1.0, (w1[:, None] * w2[None, :])[bound > -shortfall].sum()))


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
        if not (final or at_end(canary, champion, config)) and config.futility > 0:
            chance = promotion_chance(canary, champion, config)
            if chance < config.futility:
                end = horizon(canary, champion, config)
                return verdict(
                    CanaryDecision.keep,
                    reason=f"futile: {chance:.1%} chance of being shown not worse by {end[0]} and {end[1]} "
                    f"episodes (canary {canary.rate:.1%}, champion {champion.rate:.1%}, "
                    f"{canary.episodes} and {champion.episodes} episodes now); champion kept",
                )
    if final or at_end(canary, champion, config):
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
