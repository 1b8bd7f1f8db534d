"""Evaluating a policy on seeded tabletop episodes, seen and held-out tasks, against random.

Success rates come with Wilson 95% intervals (sound at small n and near 0 or 1). The random
policy runs in the same process on the same seeds, so the comparison is like for like.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from infra.contracts.evaluation import EvaluationReport, PairedComparison, PairedTest
from infra.errors import UsageError
from infra.stats import mcnemar, wilson
from sim.phrasings import operator_instruction
from sim.tabletop import TabletopEnv, Task
from worldmodel.planner import Planner, PlannerConfig
from worldmodel.policy import WorldModelPolicy

Phrasing = Literal["simulator", "operator"]


def policy_episode(env: TabletopEnv, planner: Planner, seed: int, phrasing: Phrasing = "simulator") -> dict:
    """One seeded episode; with `operator` phrasing the policy is told the task in words training never used."""
    obs, info = env.reset(seed=seed)
    instruction = info["instruction"]
    if phrasing == "operator":
        instruction = operator_instruction(Task.parse(info["task_id"]), seed)
    planner.reset()
    prev, frames, actions, decisions, latencies = obs["rgb"], [obs["rgb"]], [], [], []
    generator = torch.Generator().manual_seed(seed)
    done, step = False, 0
    while not done:
        t = time.perf_counter()
        decision = planner.decide(prev, obs["rgb"], instruction, step, generator)
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
        "instruction": instruction,
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
    phrasing: Phrasing = "simulator",
) -> EvaluationReport:
    if isinstance(policy, Path):
        policy = WorldModelPolicy.load(policy)
    planner = Planner(policy.eval(), planner_config or PlannerConfig())
    outcomes, latencies, rejected, candidates = {}, [], 0, 0
    random_wins = {}
    for split in ("seen", "heldout"):
        env = TabletopEnv(split=split)
        random_wins[split] = 0
        outcomes[split] = []
        for i in range(episodes):
            ep = policy_episode(env, planner, seed + i, phrasing)
            outcomes[split].append(bool(ep["success"]))
            latencies += ep["latencies_ms"]
            rejected += sum(c.rejected for d in ep["decisions"] for c in d.candidates)
            candidates += sum(len(d.candidates) for d in ep["decisions"])
            random_wins[split] += random_episode(env, seed + i)
            if progress:
                progress()
    results = {split: sum(wins) for split, wins in outcomes.items()}
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
        first_seed=seed,
        phrasing=phrasing,
        outcomes=outcomes,
    )


def compare(a: EvaluationReport, b: EvaluationReport, names: tuple[str, str] = ("a", "b")) -> PairedComparison:
    """A paired test of two evaluations that ran on the same seeds, per split and pooled."""
    if not a.outcomes or not b.outcomes:
        raise UsageError("an evaluation without per-seed outcomes cannot be paired", hint="re-run `fleet eval`")
    if (a.first_seed, a.episodes_per_split) != (b.first_seed, b.episodes_per_split):
        raise UsageError(
            f"the evaluations ran on different seeds: {a.episodes_per_split} from {a.first_seed} against "
            f"{b.episodes_per_split} from {b.first_seed}",
            hint="pass --episodes alike to both `fleet eval` runs",
        )
    pairs = {split: (a.outcomes[split], b.outcomes[split]) for split in a.outcomes}
    pairs["pooled"] = tuple(sum((pair[i] for pair in pairs.values()), []) for i in (0, 1))
    return PairedComparison(
        a=names[0],
        b=names[1],
        first_seed=a.first_seed,
        splits={
            split: PairedTest(episodes=len(x), a_successes=sum(x), b_successes=sum(y), **mcnemar(x, y))
            for split, (x, y) in pairs.items()
        },
    )
