"""Fine-tuning the champion on a curated training set with DeepSpeed, one process per rank.

`run_finetune` launches `python -m torch.distributed.run --standalone --nproc_per_node N -m
learner.finetune RUN_DIR` (gloo on CPU, NCCL on a GPU). RUN_DIR holds `job.json`, `parent/` (the
champion's policy directory, verified by the launcher) and `data/` (the training set); the run
writes `checkpoints/` (DeepSpeed's, every `checkpoint_every` steps), `progress.json`, and at the
end `policy/` and `result.json`. A run started again on the same RUN_DIR resumes from the latest
checkpoint, so a learner killed mid-training loses at most `checkpoint_every` steps. A
non-finite loss on any rank aborts every rank without writing a policy, so nothing is registered.

One step trains the world model (flow matching on the executed futures of kept successes), the
IDM (on their transitions) and the critic (kept successes against failures and wrong
instructions) together; the text encoder stays frozen so the three keep reading the same text.
DeepSpeed checkpoints are torch pickles: they live on the learner's own disk and are never read
from shared storage; what leaves the learner is safetensors.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

CHECKPOINTS, RESULT, PROGRESS, JOB = "checkpoints", "result.json", "progress.json", "job.json"


@dataclass
class FinetuneJob:
    steps: int = 200
    batch: int = 16  # windows per loss, per rank
    lr: float = 3e-4
    zero_stage: int = 1
    checkpoint_every: int = 25
    engine: Literal["deepspeed", "torch"] = "deepspeed"  # torch: the plain baseline `fleet bench train` compares with
    seed: int = 0
    loss_weights: dict[str, float] = field(default_factory=lambda: {"video": 1.0, "idm": 1.0, "critic": 1.0})

    def deepspeed_config(self) -> dict:
        return {
            "train_micro_batch_size_per_gpu": self.batch,
            "gradient_accumulation_steps": 1,
            "gradient_clipping": 1.0,
            "zero_optimization": {"stage": self.zero_stage},
            "zero_allow_untested_optimizer": True,  # a client AdamW: DeepSpeed's fused ones need compiled ops
            "steps_per_print": 1_000_000,
        }


class FinetuneFailed(RuntimeError):
    """The run ended without a policy: non-finite loss, a crashed rank, or a timeout."""


class Objective(torch.nn.Module):
    """The three fine-tuning losses of one step, as one module for the engine to wrap."""

    def __init__(self, policy, clips, job: FinetuneJob):
        super().__init__()
        from worldmodel.train import StageData, critic_instructions

        self.policy, self.job = policy, job
        self.video_model, self.idm, self.critic = policy.video_model, policy.idm, policy.critic
        policy.text_encoder.requires_grad_(False)
        self.successes = StageData.build([c for c in clips if c.success], policy)
        self.everything = StageData.build(clips, policy)
        self.instructions = critic_instructions(self.everything)

    def forward(self, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from worldmodel.train import critic_loss, idm_loss, video_loss

        rng, b, p = np.random.default_rng(seed), self.job.batch, self.policy
        parts = {"video": video_loss(p, self.successes, b, rng), "idm": idm_loss(p, self.successes, b, rng),
                 "critic": critic_loss(p, self.everything, b, rng, self.instructions)}  # fmt: skip
        return sum(self.job.loss_weights[k] * v for k, v in parts.items()), parts


# -- the worker (one per rank) ----------------------------------------------------------------------
def _worker(run_dir: Path) -> int:

    from learner.dataset import load_clips
    from worldmodel.policy import WorldModelPolicy

    job = FinetuneJob(**json.loads((run_dir / JOB).read_text()))
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    torch.manual_seed(job.seed + rank)
    policy = WorldModelPolicy.load(run_dir / "parent")
    objective = Objective(policy, load_clips(run_dir / "data"), job).train()
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=job.lr, weight_decay=1e-4)
    if job.engine == "deepspeed":
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
        engine, optimizer, _, _ = deepspeed.initialize(model=objective, optimizer=optimizer, config=job.deepspeed_config())
    elif world > 1:
        raise SystemExit("the plain torch engine runs one process; use deepspeed for several")

    start = 0
    if job.engine == "deepspeed" and (run_dir / CHECKPOINTS / "latest").exists():
        _, client = engine.load_checkpoint(str(run_dir / CHECKPOINTS))
        start = int(client["step"])
    t0, last = time.perf_counter(), {}
    for step in range(start, job.steps):
        loss, parts = (engine if job.engine == "deepspeed" else objective)(job.seed * 1_000_003 + step * world + rank)
        if not _finite_everywhere(loss, world):
            bad = [k for k, v in parts.items() if not torch.isfinite(v)] or ["another rank's"]
            return _finish(run_dir, rank, {"status": "aborted", "reason": f"non-finite {', '.join(bad)} loss at step {step}",
                                           "step": step}, code=3)  # fmt: skip
        if job.engine == "deepspeed":
            engine.backward(loss)
            engine.step()
        else:
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
        last = {k: round(float(v), 5) for k, v in parts.items()}
        if job.engine == "deepspeed" and (step + 1) % job.checkpoint_every == 0 and step + 1 < job.steps:
            engine.save_checkpoint(str(run_dir / CHECKPOINTS), tag=f"step{step + 1}", client_state={"step": step + 1})
            if rank == 0:
                _prune_checkpoints(run_dir / CHECKPOINTS, keep=f"step{step + 1}")
        if rank == 0:
            (run_dir / PROGRESS).write_text(json.dumps({"step": step + 1, "steps": job.steps, "losses": last}))
    elapsed = time.perf_counter() - t0
    trained = job.steps - start
    if job.engine == "deepspeed" and job.zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(objective.parameters()), modifier_rank=None):
            _save_policy(run_dir, rank, policy)
    else:
        _save_policy(run_dir, rank, policy)
    return _finish(run_dir, rank, {
        "status": "finished", "engine": job.engine, "world_size": world, "zero_stage": job.zero_stage,
        "resumed_from_step": start, "steps": job.steps, "losses": last, "seconds": round(elapsed, 2),
        # a window is one training example of one loss: video, IDM and critic each take `batch` per rank
        "windows_per_s": round(3 * job.batch * world * trained / elapsed, 1) if trained else None,
    })  # fmt: skip


def _finite_everywhere(loss: torch.Tensor, world: int) -> bool:
    flag = torch.tensor([1.0 if torch.isfinite(loss).item() else 0.0])
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _save_policy(run_dir: Path, rank: int, policy) -> None:
    if rank == 0:
        tmp = run_dir / "policy.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        policy.save(tmp)
        shutil.rmtree(run_dir / "policy", ignore_errors=True)
        tmp.rename(run_dir / "policy")


def _prune_checkpoints(directory: Path, keep: str) -> None:
    for tag in directory.iterdir():
        if tag.is_dir() and tag.name.startswith("step") and tag.name != keep:
            shutil.rmtree(tag, ignore_errors=True)


def _finish(run_dir: Path, rank: int, result: dict, code: int = 0) -> int:
    if rank == 0:
        (run_dir / RESULT).write_text(json.dumps(result, indent=1))
    return code


# -- the launcher -----------------------------------------------------------------------------------
def prepare_run(run_dir: Path, parent_policy: Path, data_dir: Path, job: FinetuneJob) -> Path:
    """Lay out RUN_DIR; an existing one (a run to resume) keeps its checkpoints."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, source in (("parent", parent_policy), ("data", data_dir)):
        if not (run_dir / name).exists():
            shutil.copytree(source, run_dir / name)
    (run_dir / JOB).write_text(json.dumps(asdict(job), indent=1))
    (run_dir / RESULT).unlink(missing_ok=True)
    return run_dir


def launch(run_dir: Path, world_size: int = 1) -> subprocess.Popen:
    threads = max(1, (os.cpu_count() or 1) // world_size)  # ranks share the cores rather than fight for them
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}",
           "-m", "learner.finetune", str(run_dir)]  # fmt: skip
    log = open(run_dir / "train.log", "a")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def run_finetune(run_dir: Path, world_size: int = 1, timeout_s: float = 3600, progress=None) -> dict:
    """Run (or resume) the job in RUN_DIR to the end; the result, or FinetuneFailed."""
    proc = launch(run_dir, world_size)
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise FinetuneFailed(f"fine-tuning in {run_dir} ran past {timeout_s:.0f} s")
        if progress and (run_dir / PROGRESS).exists():
            try:
                progress(json.loads((run_dir / PROGRESS).read_text()))
            except json.JSONDecodeError:
                pass  # caught mid-write
        time.sleep(0.5)
    result = json.loads((run_dir / RESULT).read_text()) if (run_dir / RESULT).exists() else None
    if result is None or result["status"] != "finished":
        tail = (run_dir / "train.log").read_text()[-1500:] if (run_dir / "train.log").exists() else ""
        reason = result["reason"] if result else f"the training processes exited with {proc.returncode}:\n{tail}"
        raise FinetuneFailed(f"fine-tuning in {run_dir} did not finish: {reason}")
    return result


if __name__ == "__main__":
    sys.exit(_worker(Path(sys.argv[1])))
