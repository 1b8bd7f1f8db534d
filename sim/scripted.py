"""A scripted, noisy expert for the tabletop: the source of the robot's own demonstration logs.

It reads the simulator's true state (which a learned policy never sees) and moves straight for
the next waypoint; Gaussian noise on its actions gives the varied, imperfect demonstrations that
the inverse dynamics model and the last training stage learn from.
"""

from __future__ import annotations

import numpy as np

from sim.tabletop import REGIONS, TabletopEnv

PUSH_DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "top": (0.0, -1.0), "bottom": (0.0, 1.0)}


def expert_action(env: TabletopEnv, rng: np.random.Generator, noise: float = 0.0) -> np.ndarray:
    task, scene, cfg = env.task, env.scene, env.config
    eff = scene.effector
    block = scene.blocks[env._index(task.colour)]

    def towards(target: np.ndarray, close: bool) -> np.ndarray:
        step = np.clip((target - eff) / cfg.max_speed, -1.0, 1.0)
        return np.array([*step, 1.0 if close else -1.0], np.float32)

    if task.kind == "reach":
        action = towards(block.pos, close=False)
    elif task.kind == "push":
        direction = np.array(PUSH_DIRECTIONS[task.target])
        behind = block.pos - direction * (cfg.block_half + cfg.effector_half + 0.02)
        lo, hi = cfg.workspace
        behind = np.clip(behind, lo, hi)
        if np.max(np.abs(eff - behind)) > cfg.max_speed:
            action = towards(behind, close=False)  # hover over everything to get behind it
        else:
            x0, y0, x1, y1 = REGIONS[task.target]
            goal = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
            aim = np.where(direction != 0, goal, block.pos)  # push along the axis, keep the other
            action = towards(aim - direction * (cfg.block_half + cfg.effector_half), close=True)
            action[:2] = np.where(direction != 0, direction, action[:2])
    else:
        held = scene.held == env._index(task.colour)
        target = scene.blocks[env._index(task.target)]
        if not held:
            over = np.max(np.abs(eff - block.pos)) < cfg.max_speed / 2
            action = towards(block.pos, close=over and not scene.closed)
            if scene.closed and not held:
                action[2] = -1.0  # open before approaching again
        else:
            over = np.max(np.abs(eff - target.pos)) < cfg.max_speed / 2
            action = towards(target.pos, close=not over)
    if noise:
        action[:2] += rng.normal(0.0, noise, 2)
    return np.clip(action, -1.0, 1.0)


def run_expert(env: TabletopEnv, seed: int, noise: float = 0.1, task=None) -> dict:
    """One scripted episode: frames, actions, success. The unit of the robot-log data set."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed, options={"task": task} if task else None)
    frames, actions, states = [obs["rgb"]], [], [obs["state"]]
    done = False
    while not done:
        action = expert_action(env, rng, noise)
        obs, _, terminated, truncated, info = env.step(action)
        frames.append(obs["rgb"])
        actions.append(action)
        states.append(obs["state"])
        done = terminated or truncated
    return {
        "task_id": info["task_id"],
        "instruction": info["instruction"],
        "frames": np.stack(frames),
        "actions": np.stack(actions),
        "states": np.stack(states),
        "success": info["success"],
    }
