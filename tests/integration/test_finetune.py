"""DeepSpeed fine-tuning as the learner runs it: separate processes through torchrun, resumable
after a kill, aborting without a policy on a non-finite loss."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from learner.dataset import save_clips
from learner.finetune import CHECKPOINT, PROGRESS, FinetuneFailed, FinetuneJob, launch, prepare_run, run_finetune
from sim.tabletop import ALL_TASKS
from worldmodel.policy import WorldModelPolicy
from worldmodel.stage_data import robot_logs
from worldmodel.text_encoder import build_vocab

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    clips = robot_logs(8, 0, size=64)
    clips[0].success = False  # one failure, for the critic
    parent = WorldModelPolicy.create(build_vocab([t.instruction for t in ALL_TASKS] + [c.caption for c in clips])).save(
        root / "parent"
    )
    return parent, save_clips(clips, root / "data", "scripted")


def test_a_learner_killed_mid_training_resumes_from_its_checkpoint_and_finishes(inputs, tmp_path):
    parent, data = inputs
    run = prepare_run(tmp_path / "run", parent, data, FinetuneJob(steps=14, batch=2, checkpoint_every=4))
    proc = launch(run)
    deadline = time.monotonic() + 300  # generous: the machine may be busy
    while time.monotonic() < deadline:
        progress = json.loads((run / PROGRESS).read_text()) if (run / PROGRESS).exists() else {"step": 0}
        if (run / CHECKPOINT).exists() and progress["step"] >= 5:
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole launcher and its ranks, as a crash would
    proc.wait()
    assert not (run / "policy").exists()

    result = run_finetune(run)
    assert result["status"] == "finished" and result["steps"] == 14
    assert result["resumed_from_step"] >= 4 and result["resumed_from_step"] % 4 == 0
    trained = WorldModelPolicy.load(run / "policy")
    before = WorldModelPolicy.load(parent)
    assert not torch.equal(trained.idm.head[-1].weight, before.idm.head[-1].weight)


def test_two_ranks_with_zero_stage_2_train_one_model(inputs, tmp_path):
    parent, data = inputs
    run = prepare_run(tmp_path / "run", parent, data, FinetuneJob(steps=4, batch=2, zero_stage=2))
    result = run_finetune(run, world_size=2)
    assert result["world_size"] == 2 and result["zero_stage"] == 2
    weights = load_file(run / "policy" / "video_model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_a_non_finite_loss_aborts_every_rank_and_writes_no_policy(inputs, tmp_path):
    parent, data = inputs
    poisoned = tmp_path / "poisoned"
    WorldModelPolicy.load(parent).save(poisoned)
    weights = load_file(poisoned / "idm.safetensors")
    weights = {k: torch.full_like(v, float("nan")) if "head" in k else v for k, v in weights.items()}
    save_file(weights, poisoned / "idm.safetensors")
    run = prepare_run(tmp_path / "run", poisoned, data, FinetuneJob(steps=5, batch=2))
    with pytest.raises(FinetuneFailed, match="non-finite idm loss at step 0"):
        run_finetune(run, world_size=2)
    assert not (run / "policy").exists()


def test_a_run_past_its_timeout_ends_with_every_process_it_started(inputs, tmp_path):
    parent, data = inputs
    run = prepare_run(tmp_path / "run", parent, data, FinetuneJob(steps=100_000, batch=2))
    with pytest.raises(FinetuneFailed, match="ran past 8 s"):
        run_finetune(run, world_size=2, timeout_s=8)
    time.sleep(0.5)
    assert not _processes_of(run), "a rank outlived its run"


def _processes_of(run) -> list[int]:
    """Live processes whose command line names the run directory."""
    found = []
    for proc in os.listdir("/proc"):
        try:
            with open(f"/proc/{proc}/cmdline", "rb") as f:
                if str(run).encode() in f.read():
                    found.append(int(proc))
        except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
            continue
    return found
