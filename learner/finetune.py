"""Fine-tuning the champion on a curated training set with DeepSpeed: the job and its launcher.

`run_finetune` launches `python -m torch.distributed.run --standalone --nproc_per_node N -m
learner.finetune_worker RUN_DIR` (gloo on CPU, NCCL on a GPU). RUN_DIR holds `job.json`,
`parent/` (the champion's policy directory, verified by the launcher) and `data/` (the training
set); the run writes `checkpoints/state.safetensors` every `checkpoint_every` steps (the same
format as the base stages' checkpoints), `progress.json`, and at the end `policy/` and
`result.json`. A run started again on the same RUN_DIR resumes from the latest checkpoint, so a
learner killed mid-training loses at most `checkpoint_every` steps. A non-finite loss on any
rank aborts every rank without writing a policy, so nothing is registered.

This module imports no torch: the CLI and the flows read `FinetuneJob` without paying for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from infra.errors import FleetError

CHECKPOINT, RESULT, PROGRESS, JOB = "checkpoints/state.safetensors", "result.json", "progress.json", "job.json"


@dataclass
class FinetuneJob:
    steps: Annotated[int, Field(ge=1)] = 200
    batch: Annotated[int, Field(ge=1)] = 16  # windows per loss, per rank
    lr: Annotated[float, Field(gt=0, lt=1)] = 3e-4
    zero_stage: Literal[0, 1, 2, 3] = 1
    checkpoint_every: Annotated[int, Field(ge=1)] = 25
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


class FinetuneFailed(FleetError):
    """The run ended without a policy: non-finite loss, a crashed rank, or a timeout."""


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
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={world_size}",
        "-m",
        "learner.finetune_worker",
        str(run_dir),
    ]
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
            with contextlib.suppress(json.JSONDecodeError):  # caught mid-write
                progress(json.loads((run_dir / PROGRESS).read_text()))
        time.sleep(0.5)
    result = json.loads((run_dir / RESULT).read_text()) if (run_dir / RESULT).exists() else None
    if result is None or result["status"] != "finished":
        tail = (run_dir / "train.log").read_text()[-1500:] if (run_dir / "train.log").exists() else ""
        reason = result["reason"] if result else f"the training processes exited with {proc.returncode}:\n{tail}"
        raise FinetuneFailed(f"fine-tuning in {run_dir} did not finish: {reason}")
    return result
