"""`fleet bench sim`: simulator steps per second with rendering, on one core."""

from __future__ import annotations

import time

import numpy as np

from benchmarks import BenchResult
from sim.tabletop import TabletopConfig, TabletopEnv


class SimBench(BenchResult):
    steps: int
    size: int
    episodes: int
    steps_per_s: float
    us_per_step: float


def bench_sim(steps: int = 20_000, size: int = 64, seed: int = 0) -> SimBench:
    env = TabletopEnv(TabletopConfig(size=size))
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (steps, 3)).astype(np.float32)
    env.reset(seed=seed)
    episodes = 0
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
            episodes += 1
    elapsed = time.perf_counter() - start
    return SimBench(
        steps=steps,
        size=size,
        episodes=episodes,
        steps_per_s=round(steps / elapsed, 1),
        us_per_step=round(elapsed / steps * 1e6, 1),
    )
