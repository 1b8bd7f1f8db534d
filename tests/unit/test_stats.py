"""The statistics behind every verdict: intervals for rates, and paired tests on shared seeds."""

import pytest

from infra.contracts.evaluation import EvaluationReport
from infra.errors import UsageError
from infra.stats import mcnemar, wilson
from worldmodel.evaluate import compare


def test_wilson_interval_contains_the_rate_and_stays_in_bounds():
    assert wilson(0, 20)[0] == 0.0 and wilson(20, 20)[1] == 1.0
    low, high = wilson(30, 100)
    assert low < 0.3 < high and high - low < 0.2


def test_mcnemar_counts_only_the_seeds_where_the_two_disagree():
    a = [True] * 8 + [False] * 1 + [True] * 50 + [False] * 41
    b = [False] * 8 + [True] * 1 + [True] * 50 + [False] * 41
    result = mcnemar(a, b)
    # 9 discordant seeds, 8 of them A's: p = 2 * (C(9,0) + C(9,1)) / 2^9
    assert result == {"a_only": 8, "b_only": 1, "p_value": round(2 * 10 / 512, 6)}
    assert mcnemar(b, a)["p_value"] == result["p_value"]
    assert mcnemar(a, a) == {"a_only": 0, "b_only": 0, "p_value": 1.0}
    assert mcnemar([True] * 5 + [False] * 5, [False] * 5 + [True] * 5)["p_value"] == 1.0


def test_the_one_sided_mcnemar_asks_only_whether_a_is_better():
    a = [True] * 8 + [False] * 1 + [False] * 91
    b = [False] * 8 + [True] * 1 + [False] * 91
    # A won 8 of the 9 discordant seeds: p = P(X >= 8), X ~ Bin(9, 1/2) = (C(9,8) + C(9,9)) / 2^9
    assert mcnemar(a, b, alternative="greater")["p_value"] == round(10 / 512, 6)
    # the other way round A is not better: P(X >= 1) = 1 - 1/512
    assert mcnemar(b, a, alternative="greater")["p_value"] == round(511 / 512, 6)
    assert mcnemar(a, a, alternative="greater")["p_value"] == 1.0


def report(outcomes: dict[str, list[bool]], first_seed: int = 10_000) -> EvaluationReport:
    n = len(outcomes["seen"])
    rate = {split: sum(o) / n for split, o in outcomes.items()}
    return EvaluationReport(
        success_rate=rate["seen"],
        success_ci95=(0, 1),
        heldout_success_rate=rate["heldout"],
        heldout_ci95=(0, 1),
        random_success_rate=0.0,
        random_ci95=(0, 1),
        random_heldout_success_rate=0.0,
        random_heldout_ci95=(0, 1),
        decision_latency_ms_p50=1.0,
        decision_latency_ms_p95=1.0,
        rejection_rate=0.0,
        episodes_per_split=n,
        first_seed=first_seed,
        outcomes=outcomes,
    )


def test_a_paired_comparison_pools_the_splits_and_refuses_different_seeds():
    a = report({"seen": [True] * 6 + [False] * 4, "heldout": [True] * 5 + [False] * 5})
    b = report({"seen": [False] * 10, "heldout": [True] * 5 + [False] * 5})
    result = compare(a, b)
    assert result.splits["seen"].a_only == 6 and result.splits["heldout"].a_only == 0
    assert result.splits["pooled"].episodes == 20 and result.splits["pooled"].a_only == 6
    assert result.splits["seen"].p_value == round(2 / 64, 6)
    with pytest.raises(UsageError, match="different seeds"):
        compare(a, report(b.outcomes, first_seed=0))
