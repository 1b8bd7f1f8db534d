"""`fleet bench train`: fine-tuning throughput with DeepSpeed at world size 1 and 2 against plain
PyTorch, on the same model, the same data and the same job, in one run.

Each variant is a fresh run of `learner.finetune` launched as the learner launches it (torchrun,
one process per rank, the cores split between ranks). The figure is training windows per second
over the training loop (launch and checkpoints excluded): a window is one example for one of the
three losses, so a step of batch B on R ranks is 3 x B x R windows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks import BenchResult
from learner.dataset import save_clips
from learner.finetune import FinetuneJob, prepare_run, run_finetune
from sim.tabletop import ALL_TASKS
from worldmodel.policy import WorldModelPolicy
from worldmodel.stage_data import robot_logs
from worldmodel.text_encoder import build_vocab

VARIANTS = (("torch", "torch", 1), ("deepspeed_world_1", "deepspeed", 1), ("deepspeed_world_2", "deepspeed", 2))


class TrainBench(BenchResult):
    windows_per_s: dict[str, float]
    speedup_vs_torch: dict[str, float]
    variants: dict[str, dict]
    steps: int
    batch_per_rank: int
    zero_stage: int
    trainable_parameters: int
    clips: int
    policy: str


def bench_train(
    work: Path,
    policy_dir: Path | None = None,
    clips: int = 40,
    steps: int = 30,
    batch: int = 8,
    zero_stage: int = 1,
    progress=None,
) -> TrainBench:
    shutil.rmtree(work, ignore_errors=True)
    logs = robot_logs(clips, 0, size=64)
    data = save_clips(logs, work / "data", "scripted robot logs")
    if policy_dir is None:
        vocab = build_vocab([t.instruction for t in ALL_TASKS] + [c.caption for c in logs])
        policy_dir = WorldModelPolicy.create(vocab, "tiny").save(work / "parent")
    policy = WorldModelPolicy.load(policy_dir)
    trainable = sum(p.numel() for m in (policy.video_model, policy.idm, policy.critic) for p in m.parameters())
    results = {}
    for name, engine, world in VARIANTS:
        job = FinetuneJob(steps=steps, batch=batch, engine=engine, zero_stage=zero_stage, checkpoint_every=steps + 1)
        result = run_finetune(prepare_run(work / name, policy_dir, data, job), world_size=world)
        results[name] = {
            "windows_per_s": result["windows_per_s"],
            "seconds": result["seconds"],
            "final_losses": result["losses"],
        }
        if progress:
            progress(name)
    base = results["torch"]["windows_per_s"]
    return TrainBench(
        windows_per_s={k: v["windows_per_s"] for k, v in results.items()},
        speedup_vs_torch={k: round(v["windows_per_s"] / base, 2) for k, v in results.items()},
        variants=results,
        steps=steps,
        batch_per_rank=batch,
        zero_stage=zero_stage,
        trainable_parameters=trainable,
        clips=clips,
        policy=str(policy_dir),
    )
