"""The statistics `fleet diagnose` reports: exact on small cases, None where they are undefined."""

import numpy as np
import pytest

from worldmodel.diagnose import _gripper_agreement, spearman


def test_spearman_is_one_for_any_increasing_relation_and_minus_one_for_a_decreasing_one():
    x = np.array([0.1, 0.5, 0.2, 0.9])
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)


def test_spearman_gives_ties_their_average_rank():
    # ranks of a: 0, 1.5, 1.5, 3; of b: 0, 1, 2, 3 -> Pearson of the ranks
    a, b = np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, b) == pytest.approx(np.corrcoef([0, 1.5, 1.5, 3], [0, 1, 2, 3])[0, 1])


def test_spearman_is_undefined_for_a_constant_sample():
    assert spearman(np.ones(4), np.arange(4.0)) is None


def test_gripper_agreement_counts_steps_whose_close_command_matches():
    predicted = np.array([[0, 0, 0.5], [0, 0, -0.2], [0, 0, 0.9]])
    true = np.array([[0, 0, 1.0], [0, 0, 1.0], [0, 0, 1.0]])
    assert _gripper_agreement(predicted, true) == pytest.approx(2 / 3)
