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

    evaluations = []  # the offline measurements the arms ran, by their progress bars' labels

    def progress(label, total):
        evaluations.append(label)
        return lambda *_: None

    result = bench_learning(
        tracked,
        "ci",
        tmp_path / "work",
        tmp_path / "curves.png",
        progress,
        rounds=1,  # the profile's are 2
        video_fleet_share=0.25,
        idm_fleet_share=1.0,
    )

    profile = DEMO_PROFILES["ci"]
    assert list(result.arms) == ["fleet", "control"] and result.base == profile.train
    assert result.arms["fleet"].fleet_share == profile.round.finetune.fleet_share > 0
    assert result.arms["fleet"].video_fleet_share == 0.25  # the levers given replace the profile's
    assert result.arms["fleet"].idm_fleet_share == 1.0
    control = result.arms["control"]
    assert control.fleet_share == control.idm_fleet_share == control.video_fleet_share == 0.0
    for arm in result.arms.values():
        assert [r["round"] for r in arm.rounds] == [0, 1]
        assert not any(r.get("degraded_on_purpose") for r in arm.rounds)  # no drill in a measurement
        assert arm.learning["seeds"] == result.seeds == 2 * profile.learning_episodes
        assert arm.lost == 0
    fleet, control = (result.arms[a].learning["final_outcomes"] for a in ("fleet", "control"))
    assert result.fleet_only == sum(f and not c for f, c in zip(fleet, control, strict=True))
    assert 0 <= result.p_value <= 1
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert evaluations.count("learning: v1") == 1  # both arms' base is the same weights: measured once
    for arm in result.arms.values():  # each arm's last candidate, on the base's seeds, promoted or not
        last = [r["candidate_version"] for r in arm.rounds if r["candidate_version"]][-1]
        assert arm.last_candidate["final_version"] == last
        assert arm.last_candidate["base_outcomes"] == arm.learning["base_outcomes"]
    fleet, control = (result.arms[a].last_candidate["final_outcomes"] for a in ("fleet", "control"))
    assert result.last_candidates["fleet_only"] == sum(f and not c for f, c in zip(fleet, control, strict=True))
    assert result.last_candidates["seeds"] == result.seeds


def test_the_final_champions_are_paired_seed_by_seed_and_the_fleet_arm_must_win_more():
    from benchmarks.learning import LearningArm, pair_finals

    def arm(final: list[bool]) -> LearningArm:
        return LearningArm(
            fleet_share=0.5,
            idm_fleet_share=0.5,
            video_fleet_share=0.5,
            rounds=[],
            learning={"final_outcomes": final},
            lost=0,
            seconds=0,
        )

    fleet = [True] * 6 + [False, False, True, False]
    control = [False] * 6 + [True, False, True, False]
    paired = pair_finals({"fleet": arm(fleet), "control": arm(control)})
    assert (paired["fleet_only"], paired["control_only"], paired["seeds"]) == (6, 1, 10)
    assert (paired["fleet_final_success"], paired["control_final_success"]) == (0.7, 0.2)
    assert paired["p_value"] == 0.0625  # P(at least 6 of 7 discordant seeds | neither better) = 8/128
    reversed_ = pair_finals({"fleet": arm(control), "control": arm(fleet)})
    assert reversed_["p_value"] > 0.9  # one-sided: a control that wins is no evidence for the fleet
