"""`fleet bench policy`: how long one plan-and-act decision takes, stage by stage."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import BenchResult
from sim.tabletop import TabletopEnv
from worldmodel.planner import Planner, PlannerConfig
from worldmodel.policy import WorldModelPolicy


class PolicyBench(BenchResult):
    decision_ms_p50: float  # wall clock around the whole decision
    decision_ms_p95: float
    stages_ms: dict[str, float]  # medians of the planner's own stage timers
    stage_sum_ms_p50: float  # what the stage timers add up to: the rest is glue outside them
    candidates: int
    sample_steps: int
    torch_threads: int
    decisions: int


def bench_policy(
    policy_dir: Path, decisions: int = 30, candidates: int = 8, seed: int = 0, sample_steps: int | None = None
) -> PolicyBench:
    policy = WorldModelPolicy.load(policy_dir).with_sample_steps(sample_steps)
    planner = Planner(policy, PlannerConfig(candidates=candidates))
    env = TabletopEnv()
    obs, info = env.reset(seed=seed)
    generator = torch.Generator().manual_seed(seed)
    planner.decide(obs["rgb"], obs["rgb"], info["instruction"], 0, generator)  # warm-up
    totals, sums, stages = [], [], {}
    for i in range(decisions):
        t = time.perf_counter()
        d = planner.decide(obs["rgb"], obs["rgb"], info["instruction"], i, generator)
        totals.append((time.perf_counter() - t) * 1000)
        sums.append(sum(d.timings_ms.values()))
        for k, v in d.timings_ms.items():
            stages.setdefault(k, []).append(v)
        obs, _, terminated, truncated, info = env.step(d.actions[0])
        if terminated or truncated:
            obs, info = env.reset(seed=seed + i + 1)
    return PolicyBench(
        decision_ms_p50=round(float(np.percentile(totals, 50)), 1),
        decision_ms_p95=round(float(np.percentile(totals, 95)), 1),
        stages_ms={k: round(float(np.median(v)), 2) for k, v in stages.items()},
        stage_sum_ms_p50=round(float(np.percentile(sums, 50)), 1),
        candidates=candidates,
        sample_steps=policy.video_model.config.sample_steps,
        torch_threads=torch.get_num_threads(),
        decisions=decisions,
    )
