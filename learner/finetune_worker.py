"""One rank of a fine-tuning run (see `learner.finetune`): `python -m learner.finetune_worker RUN_DIR`.

One step trains the world model (flow matching on the executed futures of kept successes), the
IDM (on their transitions) and the critic (kept successes against failures and wrong
instructions) together; the text encoder stays frozen so the three keep reading the same text.
The loop is the base stages' own (`worldmodel.trainer.fit`), and so is the checkpoint format:
safetensors, never a pickle. A resumed run restarts AdamW's moments from zero.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from learner.dataset import load_clips
from learner.finetune import CHECKPOINT, JOB, PROGRESS, RESULT, FinetuneJob
from worldmodel.checkpoint import load_state, save_state
from worldmodel.objectives import critic_instructions, critic_loss, idm_loss, video_loss
from worldmodel.policy import WorldModelPolicy
from worldmodel.stage_data import StageData
from worldmodel.trainer import DeepSpeedEngine, NonFiniteLoss, TorchEngine, fit

TRAINED = ("video_model", "idm", "critic")


class Objective(torch.nn.Module):
    """The three fine-tuning losses of one step, as one module for the engine to wrap."""

    def __init__(self, policy: WorldModelPolicy, clips, job: FinetuneJob):
        super().__init__()
        self.policy, self.job = policy, job
        self.video_model, self.idm, self.critic = policy.video_model, policy.idm, policy.critic
        policy.text_encoder.requires_grad_(False)
        self.successes = StageData.build([c for c in clips if c.success], policy)
        self.everything = StageData.build(clips, policy)
        self.instructions = critic_instructions(self.everything)

    def forward(self, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rng, b, p = np.random.default_rng(seed), self.job.batch, self.policy
        parts = {
            "video": video_loss(p, self.successes, b, rng),
            "idm": idm_loss(p, self.successes, b, rng),
            "critic": critic_loss(p, self.everything, b, rng, self.instructions),
        }
        return sum(self.job.loss_weights[k] * v for k, v in parts.items()), parts


def run(run_dir: Path) -> int:
    job = FinetuneJob(**json.loads((run_dir / JOB).read_text()))
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    torch.manual_seed(job.seed + rank)
    policy = WorldModelPolicy.load(run_dir / "parent")
    modules = {name: getattr(policy, name) for name in TRAINED}
    start = (load_state(run_dir / CHECKPOINT, modules) or {"step": 0})["step"]
    objective = Objective(policy, load_clips(run_dir / "data"), job)
    if job.engine == "deepspeed":
        engine = DeepSpeedEngine(objective, job.lr, job.deepspeed_config())
    elif world > 1:
        raise SystemExit("the plain torch engine runs one process; use deepspeed for several")
    else:
        engine = TorchEngine(objective, job.lr, max_grad_norm=1.0)

    last: dict[str, float] = {}

    def after_step(done: int, loss: float, parts: dict[str, float]) -> None:
        if done % job.checkpoint_every == 0 and done < job.steps:
            with engine.gathered():
                if rank == 0:
                    save_state(run_dir / CHECKPOINT, modules, {"step": done})
        if rank == 0:
            last.update({k: round(v, 5) for k, v in parts.items()})
            (run_dir / PROGRESS).write_text(json.dumps({"step": done, "steps": job.steps, "losses": last}))

    t0 = time.perf_counter()
    try:
        seed = job.seed * 1_000_003 + rank
        fit(
            engine,
            job.steps,
            batch=lambda step: (seed + step * world,),
            start=start,
            world=world,
            after_step=after_step,
        )
    except NonFiniteLoss as e:
        return _finish(run_dir, rank, {"status": "aborted", "reason": str(e), "step": e.step}, code=3)
    elapsed = time.perf_counter() - t0
    trained = job.steps - start
    with engine.gathered():
        _save_policy(run_dir, rank, policy)
    return _finish(
        run_dir,
        rank,
        {
            "status": "finished",
            "engine": job.engine,
            "world_size": world,
            "zero_stage": job.zero_stage,
            "resumed_from_step": start,
            "steps": job.steps,
            "losses": last,
            "seconds": round(elapsed, 2),
            # a window is one training example of one loss: video, IDM and critic each take `batch` per rank
            "windows_per_s": round(3 * job.batch * world * trained / elapsed, 1) if trained else None,
        },
    )


def _save_policy(run_dir: Path, rank: int, policy: WorldModelPolicy) -> None:
    if rank == 0:
        tmp = run_dir / "policy.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        policy.save(tmp)
        shutil.rmtree(run_dir / "policy", ignore_errors=True)
        tmp.rename(run_dir / "policy")


def _finish(run_dir: Path, rank: int, result: dict, code: int = 0) -> int:
    if rank == 0:
        (run_dir / RESULT).write_text(json.dumps(result, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
