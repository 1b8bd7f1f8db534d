"""The canary analysis: Fisher's exact test, the minimum episodes, and the promote/rollback rules."""

from __future__ import annotations

import math

import pytest

from infra.stats import wilson
from registry.analysis import AnalysisConfig, Arm, analyse, fisher_less


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


def test_a_canary_as_good_or_better_is_promoted_and_a_lower_one_within_noise_is_not():
    assert analyse(Arm(22, 40), Arm(20, 40)).decision == "promote"
    lower = analyse(Arm(17, 40), Arm(20, 40))
    assert lower.p_worse > 0.05 and lower.decision == "rollback"
    assert analyse(Arm(17, 40), Arm(20, 40), AnalysisConfig(margin=0.1)).decision == "promote"


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
