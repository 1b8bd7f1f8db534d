"""The tabletop embodiment: limits, contact rules, success checks, determinism, splits."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from sim.scripted import expert_action, run_expert
from sim.tabletop import ALL_TASKS, HELD_OUT, SEEN_TASKS, TabletopConfig, TabletopEnv

OPEN, CLOSE = -1.0, 1.0


def scene_with(env: TabletopEnv, task: str, seed: int = 0):
    env.reset(seed=seed, options={"task": task})
    return env.scene


def test_it_is_a_valid_gymnasium_environment():
    check_env(TabletopEnv(), skip_render_check=False)


def test_speed_limit_and_workspace_bounds_hold_and_breaches_are_reported():
    env = TabletopEnv()
    scene = scene_with(env, "reach-red")
    start = scene.effector.copy()
    _, _, _, _, info = env.step([5.0, 0.0, OPEN])
    assert info["limit_violation"]
    assert (
        np.isclose(scene.effector[0] - start[0], env.config.max_speed) or scene.effector[0] == env.config.workspace[1]
    )
    for _ in range(40):
        _, _, _, _, info = env.step([1.0, 1.0, OPEN])
    assert np.all(scene.effector <= env.config.workspace[1])
    assert info["limit_violation"]  # pressing against the edge is reported


def test_grasp_carry_and_place_on_another_block_completes_a_stack():
    env = TabletopEnv(split="all")
    scene = scene_with(env, "stack-red-on-blue")
    red, blue = (scene.blocks[env._index(c)] for c in ("red", "blue"))
    scene.effector = red.pos.copy()
    env.step([0.0, 0.0, CLOSE])
    assert scene.held == env._index("red")
    for _ in range(40):
        delta = np.clip((blue.pos - scene.effector) / env.config.max_speed, -1, 1)
        env.step([*delta, CLOSE])
    assert np.allclose(red.pos, scene.effector)  # carried
    assert not env.success()  # still in the gripper
    _, reward, terminated, _, info = env.step([0.0, 0.0, OPEN])
    assert red.on == env._index("blue") and terminated and reward == 1.0 and info["success"]


def test_open_gripper_hovers_over_blocks_and_a_fist_pushes_them():
    env = TabletopEnv()
    scene = scene_with(env, "push-red-left")
    red = scene.blocks[env._index("red")]
    red.pos[:] = (0.5, 0.5)
    scene.effector[:] = (0.7, 0.5)
    for _ in range(4):
        env.step([-1.0, 0.0, OPEN])
    assert np.allclose(red.pos, (0.5, 0.5))  # passed over it
    scene.effector[:] = (0.7, 0.5)
    scene.closed = True
    for _ in range(4):
        env.step([-1.0, 0.0, CLOSE])
    assert red.pos[0] < 0.5 and np.isclose(red.pos[1], 0.5)


def test_same_seed_gives_the_same_episode():
    a = run_expert(TabletopEnv(), seed=7, noise=0.2)
    b = run_expert(TabletopEnv(), seed=7, noise=0.2)
    assert a["task_id"] == b["task_id"]
    assert np.array_equal(a["frames"], b["frames"]) and np.array_equal(a["actions"], b["actions"])


def test_held_out_tasks_never_appear_in_the_seen_split():
    env = TabletopEnv(split="seen")
    seen = {env.reset(seed=s)[1]["task_id"] for s in range(500)}
    assert seen.isdisjoint(HELD_OUT)
    assert len(seen) == len(SEEN_TASKS)
    assert {TabletopEnv(split="heldout").reset(seed=s)[1]["task_id"] for s in range(100)} == HELD_OUT


@pytest.mark.parametrize("size", [32, 64, 128])
def test_frames_render_at_each_size(size):
    obs, _ = TabletopEnv(TabletopConfig(size=size)).reset(seed=0)
    assert obs["rgb"].shape == (size, size, 3) and obs["rgb"].dtype == np.uint8
    assert len(np.unique(obs["rgb"].reshape(-1, 3), axis=0)) > 10  # blocks, effector, shaded table


def test_the_scripted_expert_solves_every_task():
    env = TabletopEnv(split="all")
    failures = [t.id for t in ALL_TASKS for seed in range(3) if not run_expert(env, seed, noise=0.1, task=t)["success"]]
    assert failures == []


def test_random_actions_rarely_succeed():
    env, rng = TabletopEnv(split="all"), np.random.default_rng(0)
    wins = 0
    for seed in range(50):
        env.reset(seed=seed)
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(rng.uniform(-1, 1, 3))
            done = terminated or truncated
        wins += info["success"]
    assert wins < 15


def test_an_episode_reports_the_other_tasks_it_met_in_hindsight_with_the_first_step():
    env = TabletopEnv(split="all")
    stack = next(t for t in SEEN_TASKS if t.kind == "stack")
    obs, info = env.reset(seed=3, options={"task": stack})
    met_at_start = {t.id for t in SEEN_TASKS if t != stack and env.satisfied(t)}
    trace = []
    done, rng = False, np.random.default_rng(3)
    while not done:
        _, _, terminated, truncated, info = env.step(expert_action(env, rng, 0.0))
        trace.append({t.id for t in SEEN_TASKS if t != stack and env.satisfied(t)})
        done = terminated or truncated
    hindsight = info["hindsight"]
    # to stack the block it first reaches it: a reach of that colour, met on the way
    assert f"reach-{stack.colour}" in hindsight and 1 <= hindsight[f"reach-{stack.colour}"] < len(trace)
    for task_id, step in hindsight.items():
        assert task_id in trace[step - 1] and all(task_id not in met for met in trace[: step - 1])
    assert not (set(hindsight) & (met_at_start | HELD_OUT | {stack.id}))


def test_an_arm_mounted_a_quarter_turn_moves_sideways_for_the_same_command_and_looks_the_same():
    logs_arm, turned = TabletopEnv(), TabletopEnv(TabletopConfig(arm_turn_deg=90))
    a, b = scene_with(logs_arm, "reach-red", seed=3), scene_with(turned, "reach-red", seed=3)
    assert np.array_equal(logs_arm.render(), turned.render())  # the camera cannot tell the arms apart
    start = a.effector.copy()
    logs_arm.step([1.0, 0.0, OPEN])
    turned.step([1.0, 0.0, OPEN])
    speed = logs_arm.config.max_speed
    assert np.allclose(a.effector - start, (speed, 0.0))
    assert np.allclose(b.effector - start, (0.0, speed), atol=1e-7)
    # and the expert, which knows only the logs' arm, fails on the turned one
    assert run_expert(TabletopEnv(), seed=5)["success"] and not run_expert(turned, seed=5)["success"]
