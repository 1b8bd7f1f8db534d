"""One rank of a fine-tuning run (see `learner.finetune`): `python -m learner.finetune_worker RUN_DIR`.

One step trains the world model, the IDM and the critic together; the text encoder stays frozen
so the three keep reading the same text. Each loss draws its share of its batch from the fleet's
episodes (`fleet_share`; the world model's may differ, `video_fleet_share`) and the rest from the
replayed robot logs:
- the world model on successful episodes (the fleet's kept, imagined-and-executed successes);
- the IDM on every executed transition, failed episodes included: its labels are the actions the
  robot really took, exact whatever the outcome, on the states the fleet's own policy visits; and
  on futures the generator being fine-tuned imagines from those frames, redrawn as it trains, so
  the IDM stays adapted to the generator it will read at run time;
- the critic on successes against failures and wrong instructions, and on each decision's chosen
  imagined future labelled by what then happened (`plan_loss`).
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

from infra.files import write_json_atomic
from learner.dataset import load_clips
from learner.finetune import CHECKPOINT, JOB, PROGRESS, RESULT, FinetuneJob
from worldmodel.checkpoint import load_state, save_state
from worldmodel.objectives import (
    ImaginedWindows,
    critic_instructions,
    critic_loss,
    idm_loss,
    imagine_windows,
    plan_loss,
    video_loss,
)
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
        fleet = [c for c in clips if c.stage != "replay"] if job.uses_fleet else []
        replay = [c for c in clips if c.stage == "replay"]
        clips = fleet + replay
        self.data = {
            loss: [StageData.build(group, policy) if group else None for group in pair]
            for loss, pair in {
                "video": ([c for c in fleet if c.success], [c for c in replay if c.success]),
                "idm": (fleet, replay),
                "critic": (fleet, replay),
            }.items()
        }
        self.everything = StageData.build(clips, policy)
        self.instructions = critic_instructions(self.everything)
        self.can_imagine = job.imagined_windows > 0 and self.long_enough(self.everything)
        self.imagined: ImaginedWindows | None = None
        self.imagined_for = -1  # the `imagine_every` period the windows were drawn in

    def imagine(self, seed: int, step: int) -> ImaginedWindows | None:
        """The current generator's futures for the IDM, redrawn once per `imagine_every` steps."""
        period = step // self.job.imagine_every
        if self.can_imagine and period != self.imagined_for:
            rng = np.random.default_rng(seed)
            n, labels = self.job.imagined_windows, self.job.imagined_labels
            replay = self.data["idm"][1]
            if labels == "logged":
                sources = zip(self.data["idm"], self.split("idm", n), strict=True)
            else:  # the logs alone, where what the generator imagines is what really happened
                sources = [(replay, n)] if replay is not None else []
            parts = [
                imagine_windows(self.policy, data, k, rng, labels=labels)
                for data, k in sources
                if k and self.long_enough(data)
            ]
            self.imagined = (
                ImaginedWindows(torch.cat([p.frames for p in parts]), torch.cat([p.actions for p in parts]))
                if parts
                else None
            )
            self.imagined_for = period
            self.train()  # imagining put the networks in eval mode
        return self.imagined

    def long_enough(self, data: StageData) -> bool:
        """Whether `data` has a clip long enough to imagine a future from and check it against."""
        future = self.policy.video_model.config.future_frames
        return any(len(f) > future + 2 for f in data.frames)

    def split(self, loss: str, total: int | None = None) -> tuple[int, int]:
        """Of `total` windows of `loss` (a batch by default), how many from the fleet and how many
        from replay: the stated share, or all from the one group that has data."""
        fleet, replay, total = *self.data[loss], total or self.job.batch
        if fleet is None or replay is None:
            return (total, 0) if fleet is not None else (0, total)
        n_fleet = min(max(round(self.job.share(loss) * total), 0), total)
        return n_fleet, total - n_fleet

    def forward(self, seed: int, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rng, p = np.random.default_rng(seed), self.policy
        imagined = self.imagine(seed, step)
        losses = {
            "video": lambda data, n: video_loss(p, data, n, rng),
            "idm": lambda data, n: idm_loss(p, data, n, rng, imagined),
            "critic": lambda data, n: critic_loss(p, data, n, rng, self.instructions) + plan_loss(p, data, n, rng),
        }
        parts = {}
        for name, loss in losses.items():
            counts = self.split(name)
            terms = [n * loss(data, n) for data, n in zip(self.data[name], counts, strict=True) if n]
            parts[name] = sum(terms) / sum(counts)
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
            write_json_atomic(run_dir / PROGRESS, {"step": done, "steps": job.steps, "losses": last})

    t0 = time.perf_counter()
    try:
        seed = job.seed * 1_000_003 + rank
        fit(
            engine,
            job.steps,
            batch=lambda step: (seed + step * world, step),
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
        write_json_atomic(run_dir / RESULT, result, indent=1)
    return code


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
