"""Evaluating a policy on seeded tabletop episodes, seen and held-out tasks, against random.

Success rates come with Wilson 95% intervals (sound at small n and near 0 or 1). The random
policy runs in the same process on the same seeds, so the comparison is like for like.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from infra.contracts.evaluation import EvaluationReport
from infra.stats import wilson
from sim.tabletop import TabletopEnv
from worldmodel.planner import Planner, PlannerConfig
from worldmodel.policy import WorldModelPolicy


def policy_episode(env: TabletopEnv, planner: Planner, seed: int) -> dict:
    obs, info = env.reset(seed=seed)
    planner.reset()
    prev, frames, actions, decisions, latencies = obs["rgb"], [obs["rgb"]], [], [], []
    generator = torch.Generator().manual_seed(seed)
    done, step = False, 0
    while not done:
        t = time.perf_counter()
        decision = planner.decide(prev, obs["rgb"], info["instruction"], step, generator)
        latencies.append((time.perf_counter() - t) * 1000)
        decisions.append(decision)
        for action in decision.actions:
            prev = obs["rgb"]
            obs, _, terminated, truncated, info = env.step(action)
            frames.append(obs["rgb"])
            actions.append(action)
            step += 1
            done = terminated or truncated
            if done:
                break
    return {
        "success": info["success"],
        "task_id": info["task_id"],
        "instruction": info["instruction"],
        "frames": np.stack(frames),
        "actions": np.stack(actions),
        "decisions": decisions,
        "latencies_ms": latencies,
    }


def random_episode(env: TabletopEnv, seed: int) -> bool:
    env.reset(seed=seed)
    rng, done = np.random.default_rng(seed), False
    while not done:
        _, _, terminated, truncated, info = env.step(rng.uniform(-1, 1, 3))
        done = terminated or truncated
    return bool(info["success"])


def evaluate(
    policy: WorldModelPolicy | Path,
    episodes: int,
    seed: int = 10_000,
    planner_config: PlannerConfig | None = None,
    progress=None,
) -> EvaluationReport:
    if isinstance(policy, Path):
        policy = WorldModelPolicy.load(policy)
    planner = Planner(policy.eval(), planner_config or PlannerConfig())
    results, latencies, rejected, candidates = {}, [], 0, 0
    random_wins = {}
    for split in ("seen", "heldout"):
        env = TabletopEnv(split=split)
        wins = random_wins[split] = 0
        for i in range(episodes):
            ep = policy_episode(env, planner, seed + i)
            wins += ep["success"]
            latencies += ep["latencies_ms"]
            rejected += sum(c.rejected for d in ep["decisions"] for c in d.candidates)
            candidates += sum(len(d.candidates) for d in ep["decisions"])
            random_wins[split] += random_episode(env, seed + i)
            if progress:
                progress()
        results[split] = wins
    return EvaluationReport(
        success_rate=round(results["seen"] / episodes, 4),
        success_ci95=wilson(results["seen"], episodes),
        heldout_success_rate=round(results["heldout"] / episodes, 4),
        heldout_ci95=wilson(results["heldout"], episodes),
        random_success_rate=round(random_wins["seen"] / episodes, 4),
        random_ci95=wilson(random_wins["seen"], episodes),
        random_heldout_success_rate=round(random_wins["heldout"] / episodes, 4),
        random_heldout_ci95=wilson(random_wins["heldout"], episodes),
        decision_latency_ms_p50=round(float(np.percentile(latencies, 50)), 1),
        decision_latency_ms_p95=round(float(np.percentile(latencies, 95)), 1),
        rejection_rate=round(rejected / max(candidates, 1), 4),
        episodes_per_split=episodes,
    )
