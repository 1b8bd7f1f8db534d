"""The canary analysis: Fisher's exact test, the non-inferiority bound, the minimum episodes, and
the promote / roll back / keep rules."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from infra.stats import wilson
from registry.analysis import (
    AnalysisConfig,
    Arm,
    allowed_shortfall,
    analyse,
    difference_lower_bound,
    fisher_less,
    horizon,
    promotion_chance,
)

DEMO = AnalysisConfig(min_episodes=20, margin=0.10, max_episodes=60)  # the demo's canary


def test_fisher_matches_the_hypergeometric_tail_by_hand():
    # 1 of 5 canary successes vs 4 of 5: P(X <= 1), X ~ Hypergeometric(10 balls, 5 white, 5 drawn).
    by_hand = (math.comb(5, 0) * math.comb(5, 5) + math.comb(5, 1) * math.comb(5, 4)) / math.comb(10, 5)
    assert fisher_less(Arm(1, 5), Arm(4, 5)) == pytest.approx(by_hand)
    assert fisher_less(Arm(5, 5), Arm(0, 5)) == pytest.approx(1.0)


def test_no_verdict_before_the_minimum_episodes():
    verdict = analyse(Arm(0, 29), Arm(60, 60), AnalysisConfig(min_episodes=30))
    assert verdict.decision == "wait" and "30 episodes" in verdict.reason


def test_a_significantly_worse_canary_is_rolled_back():
    verdict = analyse(Arm(5, 40), Arm(20, 40))
    assert verdict.decision == "rollback" and verdict.p_worse < 0.05


def test_the_lower_bound_matches_newcombes_published_interval():
    # Newcombe (1998), Statistics in Medicine 17:873, table II: 56/70 against 48/80, method 10
    # (hybrid score) gives 0.0524 to 0.3339 at 95%, so the one-sided 97.5% lower bound is 0.0524.
    assert difference_lower_bound(Arm(56, 70), Arm(48, 80), alpha=0.025) == pytest.approx(0.0524, abs=2e-4)


def test_a_canary_is_promoted_only_once_shown_not_worse_by_more_than_the_margin():
    # a little better, but 40 episodes an arm cannot rule out being 10 points worse
    early = analyse(Arm(22, 40), Arm(20, 40))
    assert early.decision == "wait" and early.lower_bound < -0.10
    later = analyse(Arm(110, 200), Arm(100, 200))
    assert later.decision == "promote" and later.lower_bound > -0.10
    assert analyse(Arm(110, 200), Arm(100, 200), AnalysisConfig(margin=0.02)).decision == "wait"


def test_a_canary_that_cannot_be_told_apart_keeps_the_champion():
    # 0 of 20 against 1 of 20 (p = 0.5) is no evidence the canary is as good: never promoted
    assert analyse(Arm(0, 20), Arm(1, 20), AnalysisConfig(min_episodes=20)).decision == "wait"
    timed_out = analyse(Arm(0, 20), Arm(1, 20), AnalysisConfig(min_episodes=20), final=True)
    assert timed_out.decision == "keep" and "champion kept" in timed_out.reason
    enough = AnalysisConfig(min_episodes=20, max_episodes=40)
    assert analyse(Arm(12, 40), Arm(12, 40), enough).decision == "keep"


def test_wilson_interval_behaves_at_the_edges():
    assert wilson(0, 10)[0] == 0.0 and 0.2 < wilson(0, 10)[1] < 0.35
    lo, hi = wilson(10, 20)
    assert lo < 0.5 < hi and hi - lo < 0.45 and wilson(0, 0) == [0.0, 1.0]


def test_a_canary_whose_planner_rejects_most_candidates_is_rolled_back_before_success_can_tell():
    # 0 of 5 against 0 of 5: success cannot tell them apart, rejections can
    broken, healthy = Arm(0, 5, rejected=150, candidates=160), Arm(0, 5, rejected=4, candidates=160)
    verdict = analyse(broken, healthy, AnalysisConfig(min_episodes=30))
    assert verdict.decision == "rollback" and verdict.reason.startswith("guardrail")
    assert analyse(broken, healthy, AnalysisConfig(guardrail_episodes=6)).decision == "wait"
    assert analyse(Arm(0, 5, 40, 160), healthy, AnalysisConfig(min_episodes=30)).decision == "wait"  # within the margin


def test_at_low_rates_the_margin_shrinks_with_the_champions_rate():
    # the fifth session's demo promoted a canary at 0/26 against 4/86: its lower bound, -0.0996,
    # cleared a 10-point margin that is twice the champion's whole rate
    never_succeeds = analyse(Arm(0, 26), Arm(4, 86), DEMO, final=True)
    assert never_succeeds.lower_bound > -0.10 and never_succeeds.decision == "keep"
    # at 5% the canary may lose a quarter of it: 1.25 points, which takes a canary shown better
    long = AnalysisConfig(min_episodes=20, margin=0.10, max_episodes=2000)
    assert analyse(Arm(50, 1000), Arm(50, 1000), long).decision == "wait"
    assert analyse(Arm(100, 1000), Arm(50, 1000), long).decision == "promote"
    # at 50% the absolute 10 points is the smaller and governs, as before
    assert analyse(Arm(110, 200), Arm(100, 200), long).decision == "promote"


def test_a_canary_that_can_no_longer_be_promoted_in_time_keeps_the_champion_at_once():
    # 0 of 20 against 1 of 20 at the demo's 60 an arm: only a canary shown better could pass
    futile = analyse(Arm(0, 20), Arm(1, 20), DEMO)
    assert futile.decision == "keep" and futile.reason.startswith("futile")
    assert (
        analyse(Arm(0, 20), Arm(1, 20), AnalysisConfig(min_episodes=20, max_episodes=60, futility=0)).decision == "wait"
    )
    # a canary ahead of the champion still has its chance, and waits for it
    assert analyse(Arm(2, 20), Arm(1, 20), DEMO).decision == "wait"
    # never before the minimum, never once the arms are full (that is the plain keep)
    assert analyse(Arm(0, 19), Arm(1, 20), DEMO).decision == "wait"
    assert "cannot tell" in analyse(Arm(0, 60), Arm(1, 60), DEMO).reason


def test_uneven_arms_end_the_canary_once_as_precise_as_max_episodes_each():
    # 2 canary robots of 8: the champion's 180 episodes make 36 of the canary's enough
    # (1/36 + 1/180 = 2/60), where waiting for 60 would take the fleet 240 episodes in all
    assert "cannot tell" in analyse(Arm(3, 36), Arm(9, 180), DEMO).reason
    assert analyse(Arm(3, 35), Arm(9, 180), dataclasses.replace(DEMO, futility=0)).decision == "wait"
    # even arms end at max_episodes each, as before; never before the minimum
    even = AnalysisConfig(min_episodes=20, max_episodes=40, futility=0)
    assert analyse(Arm(12, 39), Arm(12, 40), even).decision == "wait"
    assert analyse(Arm(12, 40), Arm(12, 40), even).decision == "keep"
    assert analyse(Arm(1, 19), Arm(5, 10_000), AnalysisConfig(min_episodes=20, max_episodes=20)).decision == "wait"
    # the promotion chance looks ahead to that end, the arms growing at their present ratio
    assert horizon(Arm(3, 20), Arm(9, 100), DEMO) == (36, 180)
    assert horizon(Arm(3, 20), Arm(9, 20), DEMO) == (60, 60)


def _drawn_promotion_chance(canary: Arm, champion: Arm, config: AnalysisConfig, draws: int = 4000) -> float:
    """What `promotion_chance` computes, by drawing: each arm's rate from its posterior, then its
    episodes up to the canary's end, then the scalar bound against the shortfall."""
    rng, promoted = np.random.default_rng(0), 0
    for _ in range(draws):
        arms = []
        for arm, end in zip((canary, champion), horizon(canary, champion, config), strict=True):
            rate = rng.beta(arm.successes + 0.5, arm.episodes - arm.successes + 0.5)
            more = end - arm.episodes
            arms.append(Arm(arm.successes + int(rng.binomial(more, rate)), end))
        promoted += difference_lower_bound(*arms, config.alpha) > -allowed_shortfall(arms[1], config)
    return promoted / draws


@pytest.mark.parametrize(
    "canary, champion, config",
    [
        (Arm(1, 20), Arm(3, 60), DEMO),
        (Arm(2, 25), Arm(2, 40), DEMO),
        (Arm(12, 40), Arm(12, 40), DEMO),
        (Arm(1, 20), Arm(6, 100), DEMO),  # uneven arms
        # past 512 episodes to go the chances are summed into bins
        (Arm(3, 30), Arm(2, 30), AnalysisConfig(min_episodes=30, max_episodes=5000)),
    ],
)
def test_the_promotion_chance_is_what_drawing_the_remaining_episodes_gives(canary, champion, config):
    assert promotion_chance(canary, champion, config) == pytest.approx(
        _drawn_promotion_chance(canary, champion, config), abs=0.02
    )


def test_a_canary_allowed_a_hundred_thousand_episodes_is_analysed_in_bounded_memory():
    chance = promotion_chance(Arm(3, 30), Arm(2, 30), AnalysisConfig(min_episodes=30, max_episodes=100_000))
    assert 0.0 < chance < 1.0
