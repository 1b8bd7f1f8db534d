"""The canary analysis: Fisher's exact test, the non-inferiority bound, the minimum episodes, and
the promote / roll back / keep rules."""

from __future__ import annotations

import math

import pytest

from infra.stats import wilson
from registry.analysis import AnalysisConfig, Arm, analyse, difference_lower_bound, fisher_less


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
    demo = AnalysisConfig(min_episodes=20, margin=0.10, max_episodes=60)
    never_succeeds = analyse(Arm(0, 26), Arm(4, 86), demo, final=True)
    assert never_succeeds.lower_bound > -0.10 and never_succeeds.decision == "keep"
    # at 5% the canary may lose a quarter of it: 1.25 points, which takes a canary shown better
    long = AnalysisConfig(min_episodes=20, margin=0.10, max_episodes=2000)
    assert analyse(Arm(50, 1000), Arm(50, 1000), long).decision == "wait"
    assert analyse(Arm(100, 1000), Arm(50, 1000), long).decision == "promote"
    # at 50% the absolute 10 points is the smaller and governs, as before
    assert analyse(Arm(110, 200), Arm(100, 200), long).decision == "promote"
