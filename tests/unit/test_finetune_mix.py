"""What a round's fine-tune learns from: every executed transition for the IDM, successes for the
world model, and the fleet's episodes mixed with replayed robot logs in the stated share."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from learner.dataset import load_clips, save_clips
from learner.finetune import FinetuneJob
from learner.finetune_worker import Objective
from sim.tabletop import ALL_TASKS, TabletopConfig
from worldmodel.objectives import imagine_windows, plan_loss
from worldmodel.policy import WorldModelPolicy
from worldmodel.stage_data import StageData, robot_logs
from worldmodel.text_encoder import build_vocab


def _fleet_and_replay():
    logs = robot_logs(6, 0, size=64)
    # a fleet episode carries no grounding points or detailed caption, but its decisions' chosen
    # imagined futures (here: the real ones); one of them failed
    fleet = [replace(c, stage="fleet", points=None, detailed_caption=c.caption, **_plans(c.frames)) for c in logs[:3]]
    fleet[0] = replace(fleet[0], success=False)
    return fleet, [replace(c, stage="replay") for c in logs[3:]]


def _plans(frames: np.ndarray, future: int = 4) -> dict:
    steps = np.arange(0, len(frames) - future - 1, 2)
    return {"plans": np.stack([frames[s + 1 : s + 1 + future] for s in steps]), "plan_steps": steps}


def test_the_idm_learns_from_failed_fleet_episodes_and_each_batch_mixes_fleet_and_replay():
    torch.manual_seed(0)
    fleet, replay = _fleet_and_replay()
    policy = WorldModelPolicy.create(build_vocab([t.instruction for t in ALL_TASKS]))
    objective = Objective(policy, fleet + replay, FinetuneJob(batch=8, fleet_share=0.25, imagined_windows=8))

    idm_fleet, idm_replay = objective.data["idm"]
    assert [c.success for c in idm_fleet.clips] == [False, True, True]  # its labels are exact either way
    assert all(c.success for c in objective.data["video"][0].clips)  # the world model imitates successes
    assert objective.split("idm") == (2, 6) and objective.split("video") == (2, 6)
    loss, parts = objective(0, step=0)
    assert torch.isfinite(loss) and set(parts) == {"video", "idm", "critic"}

    alone = Objective(policy, fleet, FinetuneJob(batch=8, fleet_share=0.25))
    assert alone.split("idm") == (8, 0)  # no replay in the set: every window from the fleet

    control = Objective(policy, fleet + replay, FinetuneJob(batch=8, fleet_share=0.0))
    assert control.split("idm") == (0, 8) and control.data["idm"][0] is None
    assert len(control.everything.clips) == len(replay)  # nor imagines from the fleet's frames


def test_the_world_model_and_the_idm_can_each_take_their_own_share_of_the_fleet():
    fleet, replay = _fleet_and_replay()
    policy = WorldModelPolicy.create(build_vocab([t.instruction for t in ALL_TASKS]))

    def split(**shares) -> dict[str, tuple[int, int]]:
        objective = Objective(policy, fleet + replay, FinetuneJob(batch=8, imagined_windows=0, **shares))
        return {loss: objective.split(loss) for loss in ("video", "idm", "critic")}

    assert split(fleet_share=0.5, video_fleet_share=0.125) == {"video": (1, 7), "idm": (4, 4), "critic": (4, 4)}
    assert split(fleet_share=0.5) == {"video": (4, 4), "idm": (4, 4), "critic": (4, 4)}  # unset: the same share
    assert split(fleet_share=0.0, video_fleet_share=0.25) == {"video": (2, 6), "idm": (0, 8), "critic": (0, 8)}
    # an IDM for an arm the logs were not recorded on learns from the fleet alone
    assert split(fleet_share=0.5, idm_fleet_share=1.0) == {"video": (4, 4), "idm": (8, 0), "critic": (4, 4)}


def test_a_training_set_keeps_replayed_logs_grounding_points_and_detailed_captions(tmp_path):
    fleet, replay = _fleet_and_replay()
    loaded = load_clips(save_clips(fleet + replay, tmp_path, "manifest + replay"))
    assert [c.stage for c in loaded] == ["fleet"] * 3 + ["replay"] * 3
    assert all(c.points is None for c in loaded[:3])
    for saved, back in zip(fleet, loaded[:3], strict=True):
        assert np.array_equal(saved.plans, back.plans) and np.array_equal(saved.plan_steps, back.plan_steps)
    assert all(c.plans is None and c.plan_steps is None for c in loaded[3:])
    for saved, back in zip(replay, loaded[3:], strict=True):
        assert np.array_equal(saved.points, back.points) and back.detailed_caption == saved.detailed_caption
        assert np.array_equal(saved.actions, back.actions)


def test_the_idm_adapts_to_futures_the_generator_imagines_as_it_is_fine_tuned():
    torch.manual_seed(0)
    fleet, replay = _fleet_and_replay()
    policy = WorldModelPolicy.create(build_vocab([t.instruction for t in ALL_TASKS]))
    job = FinetuneJob(batch=4, imagined_windows=6, imagine_every=2)
    objective = Objective(policy, fleet + replay, job)
    objective.train()
    objective(0, step=0)
    first = objective.imagined
    assert first is not None and len(first.frames) == 6 and first.actions.shape[0] == 6
    assert objective.idm.training and objective.video_model.training  # imagining does not leave them in eval
    objective(1, step=1)
    assert objective.imagined is first  # the same period: not redrawn
    objective(2, step=2)
    assert objective.imagined is not first  # redrawn from the generator as it is now
    assert Objective(policy, fleet, FinetuneJob(imagined_windows=0)).imagine(0, 0) is None


def test_the_idm_imagines_from_its_own_mix_of_fleet_and_replay():
    torch.manual_seed(0)
    fleet, replay = _fleet_and_replay()
    policy = WorldModelPolicy.create(build_vocab([t.instruction for t in ALL_TASKS]))
    fleet_only = Objective(policy, fleet + replay, FinetuneJob(batch=4, imagined_windows=12, idm_fleet_share=1.0))
    windows = fleet_only.imagine(0, 0)
    fleet_actions = {a.tobytes() for c in fleet for a in c.actions}
    assert len(windows.actions) == 12 and all(a[0].numpy().tobytes() in fleet_actions for a in windows.actions)


def test_read_labels_are_the_idms_reading_of_the_real_future_on_the_replayed_logs():
    """For a fleet whose arm is not the logs' arm: the logs' futures, as this IDM reads them."""
    torch.manual_seed(0)
    fleet, replay = _fleet_and_replay()
    policy = WorldModelPolicy.create(build_vocab([t.instruction for t in ALL_TASKS]))
    data, future = StageData.build(replay, policy), policy.video_model.config.future_frames
    windows = imagine_windows(policy, data, 5, np.random.default_rng(3), labels="read")
    rng, expected = np.random.default_rng(3), []  # the same draws: which clip, which step
    for i in rng.choice(len(replay), size=5):
        t = int(rng.integers(1, len(data.frames[i]) - future))
        expected.append(policy.idm.actions(data.frames[i][None, t - 1 : t + future + 1])[0][0])
    assert torch.allclose(windows.actions, torch.stack(expected))
    assert not torch.allclose(windows.actions, imagine_windows(policy, data, 5, np.random.default_rng(3)).actions)

    job = FinetuneJob(batch=4, imagined_windows=6, idm_fleet_share=1.0, imagined_labels="read")
    imagined = Objective(policy, fleet + replay, job).imagine(0, 0)
    fleet_actions = {a.tobytes() for c in fleet for a in c.actions}
    assert len(imagined.actions) == 6 and not any(a[0].numpy().tobytes() in fleet_actions for a in imagined.actions)


def test_the_critic_learns_from_the_futures_the_robot_imagined_labelled_by_what_followed():
    """Two fleet episodes from the same start: the one that succeeded had imagined the real motion,
    the one that failed (it ran out of steps) had imagined standing still. Trained on their plans
    alone, the critic scores a plan like the first above one like the second."""
    torch.manual_seed(0)
    log, horizon = robot_logs(1, 0, size=64)[0], TabletopConfig().max_steps
    assert log.success and len(log.frames) < horizon
    moving = replace(log, stage="fleet", **_plans(log.frames))
    ran_out = np.concatenate([log.frames, np.repeat(log.frames[-1:], horizon + 1 - len(log.frames), 0)])
    imagined_still = np.stack([np.repeat(log.frames[s : s + 1], 4, 0) for s in moving.plan_steps])
    still = replace(moving, frames=ran_out, success=False, plans=imagined_still)
    policy = WorldModelPolicy.create(build_vocab([t.instruction for t in ALL_TASKS]))
    data, rng = StageData.build([moving, still], policy), np.random.default_rng(0)
    assert float(plan_loss(policy, StageData.build([replace(log, stage="replay")], policy), 4, rng)) == 0
    optimiser = torch.optim.Adam(policy.critic.parameters(), lr=1e-3)
    for _ in range(60):
        optimiser.zero_grad()
        plan_loss(policy, data, 8, rng).backward()
        optimiser.step()
    first = policy.prepare(log.frames[:1])
    videos = torch.stack([torch.cat([first, policy.prepare(plans[0])]) for plans in (moving.plans, still.plans)])
    with torch.no_grad():
        scores = torch.sigmoid(policy.critic(videos, policy.text_encoder([log.caption] * 2).pooled))
    assert scores[0] > scores[1] + 0.2
