"""`fleet bench rollout`: how fast an alias change reaches every robot, and what batching buys.

A fleet of robots runs a real policy on the configured stack (its own topics and registered
model), publishing every episode. The champion alias is then flipped between two registered
versions of that policy, at random moments of the robots' decision cycle. For each robot we time
from the alias change (the rollout event's timestamp) to the moment it runs the new version (the
model verified, loaded and assigned: its next decision uses it), and to that first decision,
which also waits for the robot's turn in the fleet's decision cycle.
Before that, the same fleet's decision throughput is measured with and without batching.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import numpy as np

from benchmarks import BenchResult
from fleet_agent.fleet import Fleet, FleetConfig
from infra import stack
from infra.settings import Settings
from registry.model_store import ModelStore
from registry.rollout import Rollout
from worldmodel.planner import PlannerConfig


def _throughput(fleet: Fleet, batch_robots: int, ticks: int) -> float:
    """Robot decisions per second over `ticks` decisions of every robot."""
    fleet.config.batch_robots = batch_robots
    fleet.tick()  # warm up this batch shape
    t = time.perf_counter()
    for _ in range(ticks):
        fleet.tick()
    return round(ticks * len(fleet.robots) / (time.perf_counter() - t), 2)


def _behind(fleet: Fleet, target: str) -> bool:
    """A robot not yet on the target version, or not yet decided with it."""
    return any(r.version != target or r.swapped_at is not None for r in fleet.robots)


class RolloutBench(BenchResult):
    robots: int
    swaps: int
    batch_robots: int
    candidates: int
    rollout_propagation_s_p50: float
    rollout_propagation_s_p95: float
    rollout_propagation_s_max: float
    first_decision_s_p50: float
    first_decision_s_p95: float
    samples: int
    swaps_timed_out: int
    decisions_per_s: dict[str, float]
    episodes_published: int


def bench_rollout(
    settings: Settings,
    policy_dir: Path,
    robots: int = 20,
    swaps: int = 6,
    batch_robots: int = 4,
    candidates: int = 8,
    throughput_ticks: int = 2,
    progress=None,
) -> RolloutBench:
    run = uuid.uuid4().hex[:8]
    work = settings.state_dir / "bench" / f"rollout-{run}"
    settings = settings.isolated(f"bench-{run}", work)
    stack.up(settings, services=("s3", "kafka", "mlflow"))
    store, rollout = ModelStore(settings), Rollout(settings)
    versions = [store.register(policy_dir).version for _ in range(2)]
    rollout.crown(versions[0])
    fleet = Fleet(
        settings, FleetConfig(robots=robots, batch_robots=batch_robots, planner=PlannerConfig(candidates=candidates))
    )
    throughput = {f"batch_{b}": _throughput(fleet, b, throughput_ticks) for b in sorted({1, batch_robots})}
    fleet.config.batch_robots = batch_robots

    stop = threading.Event()
    runner = fleet.run_in_background(stop)
    rng, timed_out = np.random.default_rng(0), 0
    for i in range(swaps):
        time.sleep(float(rng.uniform(0.5, 2.0)))  # land anywhere in the decision cycle
        target = versions[(i + 1) % 2]
        rollout.crown(target, f"bench swap {i + 1}")
        deadline = time.monotonic() + 60
        while _behind(fleet, target) and time.monotonic() < deadline:
            fleet.check_running()
            time.sleep(0.02)
        timed_out += _behind(fleet, target)
        if progress:
            progress(i + 1)
    stop.set()
    runner.join(timeout=120)
    fleet.close()
    rollout.close()
    switch, first = np.array(fleet.propagation_s), np.array(fleet.first_decision_s)
    return RolloutBench(
        robots=robots,
        swaps=swaps,
        batch_robots=batch_robots,
        candidates=candidates,
        rollout_propagation_s_p50=round(float(np.percentile(switch, 50)), 3),
        rollout_propagation_s_p95=round(float(np.percentile(switch, 95)), 3),
        rollout_propagation_s_max=round(float(switch.max()), 3),
        first_decision_s_p50=round(float(np.percentile(first, 50)), 3),
        first_decision_s_p95=round(float(np.percentile(first, 95)), 3),
        samples=len(switch),
        swaps_timed_out=timed_out,
        decisions_per_s=throughput,
        episodes_published=len(fleet.finished),
    )
