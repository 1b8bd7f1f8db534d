"""Fine-tuning the champion on a curated training set with DeepSpeed: the job and its launcher.

`run_finetune` launches `python -m torch.distributed.run --standalone --nproc_per_node N -m
learner.finetune_worker RUN_DIR` (gloo on CPU, NCCL on a GPU). RUN_DIR holds `job.json`,
`parent/` (the champion's policy directory, verified by the launcher) and `data/` (the training
set); the run writes `checkpoints/state.safetensors` every `checkpoint_every` steps (the same
format as the base stages' checkpoints), `progress.json`, and at the end `policy/` and
`result.json`. A run started again on the same RUN_DIR resumes from the latest checkpoint, so a
learner killed mid-training loses at most `checkpoint_every` steps; `run.json` records the sha256
of the parent and of the data it started from, and a RUN_DIR that holds another parent or other
data is refused, never resumed. One process at a time holds RUN_DIR (an exclusive lock on
`.lock`). A timeout or a failure kills the whole process group: no rank outlives its run. A
non-finite loss on any rank aborts every rank without writing a policy, so nothing is registered.

This module imports no torch: the CLI and the flows read `FinetuneJob` without paying for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
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
IDENTITY, LOCK = "run.json", ".lock"


@dataclass
class FinetuneJob:
    steps: Annotated[int, Field(ge=1)] = 200
    batch: Annotated[int, Field(ge=1)] = 16  # windows per loss, per rank
    lr: Annotated[float, Field(gt=0, lt=1)] = 3e-4
    zero_stage: Literal[0, 1, 2, 3] = 1
    checkpoint_every: Annotated[int, Field(ge=1)] = 25
    engine: Literal["deepspeed", "torch"] = "deepspeed"  # torch: the plain baseline `fleet bench train` compares with
    seed: int = 0
    # The share of every batch drawn from the fleet's episodes; the rest replays the robot logs (when
    # the training set has them), so a round adds what the fleet did without forgetting the base.
    # 0 for every loss: the fleet's episodes are not used at all, not even as frames to imagine from
    # (a control that trains the same steps on replay alone, as `fleet bench learning` runs it).
    fleet_share: Annotated[float, Field(ge=0, le=1)] = 0.5
    # The world model's own share, where it should differ: it learns only from successes, and a
    # round brings a handful, so half of every batch from them is those few episodes over and over.
    # None: `fleet_share`.
    video_fleet_share: Annotated[float, Field(ge=0, le=1)] | None = None
    # The IDM's own share, where it should differ: it is the embodiment's model, and replayed logs
    # recorded on an arm that moves otherwise teach it the wrong one (`sim.tabletop`'s
    # `arm_turn_deg`). None: `fleet_share`.
    idm_fleet_share: Annotated[float, Field(ge=0, le=1)] | None = None
    # Half of every IDM batch is futures imagined by the generator being fine-tuned, labelled with
    # what the robot really did, redrawn every `imagine_every` steps: the IDM reads imagined futures
    # at run time, and must keep up with the generator it is paired with. 0 windows: real frames only.
    # "logged": imagined from the IDM's own mix of fleet and replay, labelled with the actions the
    # robot took. "read": imagined from the replayed logs only (the generator imitates them, so there
    # it imagines what really happened), labelled with the IDM's reading of that real future: for a
    # fleet whose arm is not the logs' arm, whose own actions did not make the futures imagined.
    imagined_windows: Annotated[int, Field(ge=0)] = 128
    imagine_every: Annotated[int, Field(ge=1)] = 100
    imagined_labels: Literal["logged", "read"] = "logged"
    loss_weights: dict[str, float] = field(default_factory=lambda: {"video": 1.0, "idm": 1.0, "critic": 1.0})

    def share(self, loss: str) -> float:
        """The share of `loss`'s batch drawn from the fleet's episodes."""
        own = {"video": self.video_fleet_share, "idm": self.idm_fleet_share}.get(loss)
        return self.fleet_share if own is None else own

    @property
    def uses_fleet(self) -> bool:
        return any(self.share(loss) > 0 for loss in ("video", "idm", "critic"))

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
    """Lay out RUN_DIR; an existing one (a run to resume) keeps its checkpoints, if it was started
    from the same parent and data, and is refused otherwise."""
    identity = {"parent_sha256": tree_digest(parent_policy), "data_sha256": tree_digest(data_dir)}
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        marker = run_dir / IDENTITY
        if marker.exists() and (found := json.loads(marker.read_text())) != identity:
            raise FinetuneFailed(
                f"{run_dir} holds a run from another parent or other data ({found}, not {identity})",
                hint="refusing to resume it: remove the directory or give the run another one",
            )
        if not marker.exists() and any(p.name != LOCK for p in run_dir.iterdir()):
            raise FinetuneFailed(f"{run_dir} is not empty and records no run", hint="remove it or choose another")
        for name, source in (("parent", parent_policy), ("data", data_dir)):
            if not (run_dir / name).exists():
                shutil.copytree(source, run_dir / name)
        marker.write_text(json.dumps(identity, indent=1))
        (run_dir / JOB).write_text(json.dumps(asdict(job), indent=1))
        (run_dir / RESULT).unlink(missing_ok=True)
    return run_dir


def tree_digest(directory: Path) -> str:
    """sha256 over every file's relative path and content, in path order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        with path.open("rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold RUN_DIR exclusively; a second learner on the same directory is refused, not queued."""
    with open(run_dir / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise FinetuneFailed(
                f"{run_dir} is in use by another process ({handle.read().strip() or 'unknown'})",
                hint="wait for it to finish, or stop it",
            ) from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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


def end_process_tree(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Stop the launcher and every process under it. torchrun starts each rank in a session of its
    own, so killing the launcher's group alone would leave the ranks running: the tree is read
    from /proc first, the launcher asked to stop its ranks (SIGTERM), and whatever is left killed."""
    tree = [proc.pid, *_descendants(proc.pid)]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace_s)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # the command name may hold spaces and parentheses: the parent pid follows the last ")"
            fields = entry.read_text().rpartition(")")[2].split()
            children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def run_finetune(run_dir: Path, world_size: int = 1, timeout_s: float = 3600, progress=None) -> dict:
    """Run (or resume) the job in RUN_DIR to the end; the result, or FinetuneFailed."""
    with run_lock(run_dir):
        proc = launch(run_dir, world_size)
        deadline = time.monotonic() + timeout_s
        try:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    raise FinetuneFailed(f"fine-tuning in {run_dir} ran past {timeout_s:.0f} s")
                if progress and (run_dir / PROGRESS).exists():
                    progress(json.loads((run_dir / PROGRESS).read_text()))
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                end_process_tree(proc)
    result = json.loads((run_dir / RESULT).read_text()) if (run_dir / RESULT).exists() else None
    if result is None or result["status"] != "finished":
        tail = (run_dir / "train.log").read_text()[-1500:] if (run_dir / "train.log").exists() else ""
        reason = result["reason"] if result else f"the training processes exited with {proc.returncode}:\n{tail}"
        raise FinetuneFailed(f"fine-tuning in {run_dir} did not finish: {reason}")
    return result
