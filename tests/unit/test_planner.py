"""Plan-and-act: rejection, resampling, best-of-K, smoothing, records, reproducibility."""

from collections import defaultdict

import numpy as np
import pytest
import torch

from infra.contracts.episode import Decision
from sim.tabletop import ALL_TASKS, TabletopEnv
from worldmodel.planner import SPEED_LIMIT, UNTRUSTED, Planner, PlannerConfig, PlanRequest
from worldmodel.policy import WorldModelPolicy
from worldmodel.text_encoder import build_vocab


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    return WorldModelPolicy.create(build_vocab([t.instruction for t in ALL_TASKS])).eval()


@pytest.fixture
def scene():
    obs, info = TabletopEnv().reset(seed=0)
    return obs["rgb"], info["instruction"]


def idm_outputs(policy, mean: float, log_var: float):
    """Make the IDM predict a fixed action mean and log variance everywhere."""
    last = policy.idm.head[-1]
    dim = policy.idm.config.action_dim
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([mean] * dim + [log_var] * dim))


def decide(policy, scene, seed=0, **config):
    frame, instruction = scene
    planner = Planner(policy, PlannerConfig(**config))
    return planner.decide(frame, frame, instruction, step=0, generator=torch.Generator().manual_seed(seed))


def test_futures_beyond_the_speed_limit_are_rejected_then_resampled_up_to_the_budget(policy, scene):
    idm_outputs(policy, mean=3.0, log_var=-2.0)  # imagined motion three times faster than the robot
    d = decide(policy, scene, candidates=4, resample_budget=2)
    assert d.resamples == 2 and len(d.candidates) == 12
    assert all(c.rejected and c.rejection_reason == SPEED_LIMIT for c in d.candidates)
    assert d.chosen is None and not d.actions.any()  # holds still rather than act on a bad plan
    assert d.imagined.shape[0] == 12


def test_futures_the_idm_does_not_trust_are_rejected(policy, scene):
    idm_outputs(policy, mean=0.2, log_var=4.0)
    d = decide(policy, scene, candidates=4, resample_budget=0)
    assert {c.rejection_reason for c in d.candidates} == {UNTRUSTED}


def test_the_best_scored_survivor_is_chosen_and_its_actions_executed(policy, scene):
    idm_outputs(policy, mean=0.5, log_var=-2.0)
    d = decide(policy, scene, candidates=8, smooth_window=1)
    scores = [c.score for c in d.candidates]
    assert d.chosen == int(np.argmax(scores)) and d.resamples == 0
    assert d.actions.shape == (2, 3) and np.allclose(d.actions, 0.5, atol=1e-5)


def test_without_rejection_or_critic_the_first_candidate_is_taken(policy, scene):
    idm_outputs(policy, mean=3.0, log_var=4.0)
    d = decide(policy, scene, use_rejection=False, use_critic=False)
    assert d.chosen == 0 and not any(c.rejected for c in d.candidates)
    assert np.all(np.abs(d.actions) <= 1)  # executed actions always respect the limits


def test_sliding_window_averages_overlapping_plans(policy, scene):
    frame, instruction = scene
    planner = Planner(policy, PlannerConfig(smooth_window=3, execute_steps=1))
    idm_outputs(policy, mean=0.6, log_var=-2.0)
    planner.decide(frame, frame, instruction, step=0)  # also predicts steps 1..3
    idm_outputs(policy, mean=0.0, log_var=-2.0)
    second = planner.decide(frame, frame, instruction, step=1)
    assert np.allclose(second.actions[0], 0.3, atol=1e-5)  # mean of the old 0.6 and the new 0.0


def test_same_seed_same_decision_and_the_record_fits_the_episode_contract(policy, scene):
    idm_outputs(policy, mean=0.1, log_var=-1.0)
    a, b = decide(policy, scene, seed=3), decide(policy, scene, seed=3)
    assert a.chosen == b.chosen and np.array_equal(a.imagined, b.imagined) and np.allclose(a.actions, b.actions)
    record = Decision.model_validate_json(a.record(step=4).model_dump_json())
    assert record.step == 4 and len(record.candidates) == 8 and record.latency_ms > 0
    assert set(a.timings_ms) == {"ground", "encode", "imagine", "inverse_dynamics", "reject", "critic", "smooth"}


def test_policy_directory_round_trips(policy, tmp_path):
    policy.save(tmp_path)
    loaded = WorldModelPolicy.load(tmp_path)
    frames = np.zeros((2, 64, 64, 3), np.uint8)
    assert torch.equal(loaded.prepare(frames), policy.prepare(frames))
    for name in ("text_encoder", "video_model", "idm", "critic"):
        for key, tensor in getattr(policy, name).state_dict().items():
            assert torch.equal(tensor, getattr(loaded, name).state_dict()[key])


def test_robots_deciding_in_one_batch_each_get_their_own_candidates_and_window(policy, scene):
    idm_outputs(policy, mean=0.5, log_var=-2.0)
    frame, _ = scene
    planner = Planner(policy, PlannerConfig(candidates=3, smooth_window=3))
    windows = [defaultdict(list) for _ in range(3)]
    requests = [
        PlanRequest(frame, frame, t.instruction, step=0, pending=w) for t, w in zip(ALL_TASKS[:3], windows, strict=True)
    ]
    decisions = planner.decide_batch(requests, torch.Generator().manual_seed(0))
    assert len(decisions) == 3
    for d, w in zip(decisions, windows, strict=True):
        assert len(d.candidates) == 3 and all(c.score is not None for c in d.candidates)
        assert d.imagined.shape[0] == 3 and d.actions.shape == (2, policy.idm.config.action_dim)
        # only this robot's own plan waits for the steps after the executed ones
        future = policy.video_model.config.future_frames
        assert sorted(w) == list(range(2, future)) and all(len(v) == 1 for v in w.values())


def test_an_instruction_in_unknown_words_is_planned_as_the_task_it_names(scene):
    frame, _ = scene
    torch.manual_seed(0)
    policy = WorldModelPolicy.create(build_vocab([t.instruction for t in ALL_TASKS])).eval()
    torch.nn.init.normal_(policy.video_model.head.weight, std=0.1)  # zero at birth: futures would ignore the text
    said = "touch the green block with the gripper"  # "touch", "with" and "gripper" are unknown words
    grounded, as_said = (Planner(policy, PlannerConfig(ground_instructions=g)) for g in (True, False))
    assert grounded.understood(said) == "reach the green block"
    assert as_said.understood(said) == said

    def imagined(planner, text):
        return planner.decide(frame, frame, text, step=0, generator=torch.Generator().manual_seed(0)).imagined

    np.testing.assert_array_equal(imagined(grounded, said), imagined(as_said, "reach the green block"))
    assert not np.array_equal(imagined(as_said, said), imagined(as_said, "reach the green block"))
