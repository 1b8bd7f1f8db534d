"""What a round's fine-tune learns from: every executed transition for the IDM, successes for the
world model, and the fleet's episodes mixed with replayed robot logs in the stated share."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from learner.dataset import load_clips, save_clips
from learner.finetune import FinetuneJob
from learner.finetune_worker import Objective
from sim.tabletop import ALL_TASKS
from worldmodel.policy import WorldModelPolicy
from worldmodel.stage_data import robot_logs
from worldmodel.text_encoder import build_vocab


def _fleet_and_replay():
    logs = robot_logs(6, 0, size=64)
    # a fleet episode carries no grounding points or detailed caption; one of them failed
    fleet = [replace(c, stage="fleet", points=None, detailed_caption=c.caption) for c in logs[:3]]
    fleet[0] = replace(fleet[0], success=False)
    return fleet, [replace(c, stage="replay") for c in logs[3:]]


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


def test_a_training_set_keeps_replayed_logs_grounding_points_and_detailed_captions(tmp_path):
    fleet, replay = _fleet_and_replay()
    loaded = load_clips(save_clips(fleet + replay, tmp_path, "manifest + replay"))
    assert [c.stage for c in loaded] == ["fleet"] * 3 + ["replay"] * 3
    assert all(c.points is None for c in loaded[:3])
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
