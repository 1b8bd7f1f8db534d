"""`fleet bench learning --profile ci`: both arms run the demo's rounds on the real stack, from one
base, and their final champions are paired on the same seeds."""

from __future__ import annotations

import pytest

from infra.clients import use_prefect

pytestmark = pytest.mark.integration


def test_the_fleet_arm_and_the_replay_only_control_run_the_same_rounds_on_the_same_seeds(tracked, tmp_path):
    use_prefect(tracked)
    from benchmarks.learning import bench_learning
    from flows.config import DEMO_PROFILES

    result = bench_learning(tracked, "ci", tmp_path / "work", tmp_path / "curves.png")

    profile = DEMO_PROFILES["ci"]
    assert list(result.arms) == ["fleet", "control"]
    assert result.arms["fleet"].fleet_share == profile.round.finetune.fleet_share > 0
    assert result.arms["control"].fleet_share == 0.0
    for arm in result.arms.values():
        assert [r["round"] for r in arm.rounds] == list(range(profile.rounds + 1))
        assert not any(r.get("degraded_on_purpose") for r in arm.rounds)  # no drill in a measurement
        assert arm.learning["seeds"] == result.seeds == 2 * profile.learning_episodes
        assert arm.lost == 0
    fleet, control = (result.arms[a].learning["final_outcomes"] for a in ("fleet", "control"))
    assert result.fleet_only == sum(f and not c for f, c in zip(fleet, control, strict=True))
    assert 0 <= result.p_value <= 1
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
