"""A tabletop embodiment with the Gymnasium API: one end effector, two to four coloured blocks.

Seen from above. The effector moves at most `max_speed` per step inside the workspace, and its
gripper opens and closes. Blocks follow simple contact rules: an open gripper hovers over blocks;
closing it over a block grasps the block, which then moves with the effector, and opening
releases it, onto another block if it is over one; a gripper closed on nothing is a fist that
pushes the blocks it runs into. Tasks are short instructions with exact
success checks. Some task and colour combinations are held out of all training to measure
generalisation.

Observation: ``{"rgb": uint8 (S, S, 3), "state": float32}``; action: ``[dx, dy, grip]`` in
[-1, 1], where dx, dy are fractions of the speed limit and grip > 0 closes the gripper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import gymnasium as gym
import numpy as np
import pydantic.dataclasses

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 50, 50),
    "green": (50, 170, 70),
    "blue": (50, 90, 220),
    "yellow": (230, 200, 50),
}
COLOUR_NAMES = list(COLOURS)
# Regions as (x0, y0, x1, y1) in workspace units; x grows to the right, y downwards.
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "left": (0.0, 0.0, 0.3, 1.0),
    "right": (0.7, 0.0, 1.0, 1.0),
    "top": (0.0, 0.0, 1.0, 0.3),
    "bottom": (0.0, 0.7, 1.0, 1.0),
}


@dataclass(frozen=True)
class Task:
    kind: Literal["reach", "push", "stack"]
    colour: str
    target: str = ""  # a region for push, a second colour for stack

    @property
    def id(self) -> str:
        return {
            "reach": f"reach-{self.colour}",
            "push": f"push-{self.colour}-{self.target}",
            "stack": f"stack-{self.colour}-on-{self.target}",
        }[self.kind]

    @property
    def instruction(self) -> str:
        return {
            "reach": f"reach the {self.colour} block",
            "push": f"push the {self.colour} block to the {self.target}",
            "stack": f"put the {self.colour} block on the {self.target} block",
        }[self.kind]

    @property
    def colours(self) -> tuple[str, ...]:
        return (self.colour, self.target) if self.kind == "stack" else (self.colour,)

    @classmethod
    def parse(cls, task_id: str) -> Task:
        for task in ALL_TASKS:
            if task.id == task_id:
                return task
        raise ValueError(f"unknown task {task_id!r}; known: {', '.join(t.id for t in ALL_TASKS)}")


ALL_TASKS: list[Task] = (
    [Task("reach", c) for c in COLOUR_NAMES]
    + [Task("push", c, r) for c in COLOUR_NAMES for r in REGIONS]
    + [Task("stack", a, b) for a in COLOUR_NAMES for b in COLOUR_NAMES if a != b]
)
# Never seen in training: each kind keeps one colour pairing back, so a policy must combine
# a known skill with a known colour in a new way.
HELD_OUT: frozenset[str] = frozenset({"reach-yellow", "push-green-right", "push-yellow-top", "stack-blue-on-red"})
SEEN_TASKS = [t for t in ALL_TASKS if t.id not in HELD_OUT]
HELD_OUT_TASKS = [t for t in ALL_TASKS if t.id in HELD_OUT]
# Relabelled only into seen tasks: the held-out ones must stay unseen by training, fleet data included.
HINDSIGHT_TASKS = SEEN_TASKS


@pydantic.dataclasses.dataclass(frozen=True)
class TabletopConfig:
    size: Literal[32, 64, 128] = 64
    max_speed: float = 0.05  # workspace units per step
    workspace: tuple[float, float] = (0.05, 0.95)
    block_half: float = 0.06
    # Large and high-contrast enough to stay a clear shape at the world model's 32 px; at 0.03
    # the gripper blurred into two grey pixels that imagined futures could not keep track of.
    effector_half: float = 0.045
    max_steps: int = 60
    min_objects: int = 2
    max_objects: int = 4
    # How the scene looks, not how it behaves: "human" draws a hand instead of the gripper, and
    # the camera can be turned (quarter turns) and shifted. Used for the human point-of-view
    # training stage, whose videos show the same tasks done by another embodiment.
    embodiment: Literal["robot", "human"] = "robot"
    camera_turns: int = 0
    camera_shift: tuple[int, int] = (0, 0)
    # How the arm is mounted relative to the camera, in degrees: an action's (dx, dy) is turned by
    # this angle before it moves the effector. The robot logs come from an arm at 0; a fleet whose
    # arms are mounted otherwise looks the same on camera and moves differently for the same
    # command, which only its own executed transitions can teach the IDM.
    arm_turn_deg: float = 0.0


@dataclass
class Block:
    colour: str
    pos: np.ndarray
    on: int = -1  # index of the block it rests on


@dataclass
class Scene:
    effector: np.ndarray
    closed: bool
    held: int  # index of the grasped block, -1 if none
    blocks: list[Block] = field(default_factory=list)


class TabletopEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, config: TabletopConfig = TabletopConfig(), split: Literal["seen", "heldout", "all"] = "seen"):
        self.config = config
        self.split = split
        self.action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        s = config.size
        self.observation_space = gym.spaces.Dict(
            {
                "rgb": gym.spaces.Box(0, 255, (s, s, 3), np.uint8),
                "state": gym.spaces.Box(-1.0, 2.0, (STATE_DIM,), np.float32),
            }
        )
        self._background = table_texture(s)
        turn = np.deg2rad(config.arm_turn_deg)
        self._arm = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]], dtype=np.float32)
        self.task: Task | None = None
        self.scene: Scene | None = None
        self.steps = 0

    # -- Gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        pool = {"seen": SEEN_TASKS, "heldout": HELD_OUT_TASKS, "all": ALL_TASKS}[self.split]
        task = options.get("task") or pool[self.np_random.integers(len(pool))]
        self.task = Task.parse(task) if isinstance(task, str) else task
        self.scene = self._random_scene(self.task)
        self.steps = 0
        # Hindsight: other seen tasks this episode comes to satisfy, with the first step it does.
        # A check already met at the start is no demonstration of anything, so it never counts.
        self._met_at_start, self.hindsight = self._satisfied_others(), {}
        return self._observation(), self._info(limit_violation=False)

    def step(self, action):
        cfg, scene = self.config, self.scene
        action = np.asarray(action, dtype=np.float32)
        limit_violation = bool(np.any(np.abs(action[:2]) > 1.0 + 1e-6))

        # The gripper acts where the effector is, then the effector moves.
        close = bool(action[2] > 0)
        if close and not scene.closed:
            scene.held = self._block_under_effector()
            if scene.held >= 0:
                self._lift(scene.held)
        elif not close and scene.closed and scene.held >= 0:
            self._place(scene.held)
            scene.held = -1
        scene.closed = close

        move = self._arm @ np.clip(action[:2], -1.0, 1.0) * cfg.max_speed
        lo, hi = cfg.workspace
        target = scene.effector + move
        limit_violation |= bool(np.any((target < lo) | (target > hi)))
        scene.effector = np.clip(target, lo, hi)
        if scene.held >= 0:
            self._carry(scene.held, scene.effector)
        elif scene.closed:
            self._push(move)

        self.steps += 1
        for task_id in self._satisfied_others() - self._met_at_start - self.hindsight.keys():
            self.hindsight[task_id] = self.steps
        success = self.success()
        truncated = self.steps >= cfg.max_steps and not success
        return self._observation(), float(success), success, truncated, self._info(limit_violation)

    def render(self) -> np.ndarray:
        return self._render()

    # -- task -----------------------------------------------------------------------------------
    def success(self) -> bool:
        return self.satisfied(self.task)

    def satisfied(self, task: Task) -> bool:
        """Whether the scene now meets `task`'s success check (False if a block it names is absent)."""
        scene = self.scene
        if any(self._index(c) is None for c in task.colours):
            return False
        i = self._index(task.colour)
        block = scene.blocks[i]
        if task.kind == "reach":
            return bool(np.max(np.abs(scene.effector - block.pos)) < self.config.block_half)
        if task.kind == "push":
            x0, y0, x1, y1 = REGIONS[task.target]
            return bool(scene.held != i and x0 <= block.pos[0] <= x1 and y0 <= block.pos[1] <= y1)
        return bool(scene.held != i and block.on == self._index(task.target))

    def _satisfied_others(self) -> set[str]:
        return {t.id for t in HINDSIGHT_TASKS if t.id != self.task.id and self.satisfied(t)}

    def _index(self, colour: str) -> int | None:
        return next((i for i, b in enumerate(self.scene.blocks) if b.colour == colour), None)

    # -- contact rules --------------------------------------------------------------------------
    def _block_under_effector(self) -> int:
        """The top-most block under the effector, or -1."""
        under = [
            i
            for i, b in enumerate(self.scene.blocks)
            if np.max(np.abs(b.pos - self.scene.effector)) < self.config.block_half
        ]
        resting_on = {b.on for b in self.scene.blocks}
        tops = [i for i in under if i not in resting_on]
        return tops[0] if tops else -1

    def _lift(self, i: int) -> None:
        self.scene.blocks[i].on = -1

    def _place(self, i: int) -> None:
        block = self.scene.blocks[i]
        below = [
            j
            for j, b in enumerate(self.scene.blocks)
            if j != i and b.on == -1 and np.max(np.abs(b.pos - block.pos)) < self.config.block_half
        ]
        if below:
            block.on = below[0]
            block.pos = self.scene.blocks[below[0]].pos.copy()

    def _carry(self, i: int, to: np.ndarray) -> None:
        self.scene.blocks[i].pos = to.copy()
        self._follow(i)

    def _follow(self, i: int) -> None:
        """Blocks resting on block i move with it."""
        for j, b in enumerate(self.scene.blocks):
            if b.on == i:
                b.pos = self.scene.blocks[i].pos.copy()
                self._follow(j)

    def _push(self, move: np.ndarray) -> None:
        """A closed, empty gripper moving into a block pushes it ahead along the motion."""
        if not np.any(move):
            return
        cfg, eff = self.config, self.scene.effector
        reach = cfg.block_half + cfg.effector_half
        lo, hi = cfg.workspace
        axis = int(np.argmax(np.abs(move)))
        for i, b in enumerate(self.scene.blocks):
            if b.on >= 0:
                continue
            gap = b.pos - eff
            if np.all(np.abs(gap) < reach) and np.sign(gap[axis]) == np.sign(move[axis]):
                b.pos[axis] = np.clip(eff[axis] + np.sign(move[axis]) * reach, lo, hi)
                self._follow(i)

    # -- scene, observation, rendering ----------------------------------------------------------
    def _random_scene(self, task: Task) -> Scene:
        cfg, rng = self.config, self.np_random
        n = int(rng.integers(max(cfg.min_objects, len(task.colours)), cfg.max_objects + 1))
        others = [c for c in COLOUR_NAMES if c not in task.colours]
        colours = list(task.colours) + list(rng.permutation(others)[: n - len(task.colours)])
        lo, hi = cfg.workspace
        positions: list[np.ndarray] = []
        while len(positions) < n + 1:  # blocks, then the effector, apart from each other
            p = rng.uniform(lo + 0.1, hi - 0.1, 2)
            if all(np.max(np.abs(p - q)) > 2.5 * cfg.block_half for q in positions):
                positions.append(p)
        blocks = [Block(c, positions[i]) for i, c in enumerate(colours)]
        order = rng.permutation(n)
        blocks = [blocks[i] for i in order]
        scene = Scene(effector=positions[-1], closed=False, held=-1, blocks=blocks)
        if task.kind == "push":
            x0, y0, x1, y1 = REGIONS[task.target]
            pushed = next(b for b in blocks if b.colour == task.colour)
            while x0 <= pushed.pos[0] <= x1 and y0 <= pushed.pos[1] <= y1:  # not already done
                pushed.pos = rng.uniform(lo + 0.1, hi - 0.1, 2)
        return scene

    def _observation(self) -> dict:
        return {"rgb": self._render(), "state": self.state_vector()}

    def state_vector(self) -> np.ndarray:
        """Effector x, y, closed; then per colour slot: present, x, y, held, resting on another."""
        scene = self.scene
        out = np.zeros(STATE_DIM, np.float32)
        out[:3] = (*scene.effector, float(scene.closed))
        for i, b in enumerate(scene.blocks):
            k = state_slot(b.colour)
            out[k : k + 5] = (1.0, *b.pos, float(scene.held == i), float(b.on >= 0))
        return out

    def _info(self, limit_violation: bool) -> dict:
        return {
            "task_id": self.task.id,
            "instruction": self.task.instruction,
            "heldout": self.task.id in HELD_OUT,
            "limit_violation": limit_violation,
            "success": self.success(),
            "hindsight": dict(self.hindsight),
        }

    def _render(self) -> np.ndarray:
        cfg, scene, s = self.config, self.scene, self.config.size
        img = self._background.copy()
        half = max(1, round(cfg.block_half * s))

        def box(centre, h, colour):
            cy, cx = int(centre[1] * s), int(centre[0] * s)
            img[max(cy - h, 0) : cy + h, max(cx - h, 0) : cx + h] = colour

        # Bottom blocks first, then stacked and held ones, so what is on top is drawn on top.
        depth = [self._depth(i) + (10 if i == scene.held else 0) for i in range(len(scene.blocks))]
        for i in np.argsort(depth, kind="stable"):
            b = scene.blocks[i]
            lifted = depth[i] > 0
            if lifted:  # a shadow-like dark rim marks a block that is above the table
                box(b.pos, half + 1, (40, 40, 40))
            box(b.pos, half, COLOURS[b.colour])
        e = max(1, round(cfg.effector_half * s))
        if cfg.embodiment == "robot":
            box(scene.effector, e, (20, 20, 20) if scene.closed else (235, 235, 235))
            box(scene.effector, e // 3, (120, 120, 120) if scene.closed else (90, 90, 90))  # the gripper's centre
        else:  # a hand: skin tone, a fist smaller than an open palm
            box(scene.effector, e if scene.closed else e + max(1, s // 64), (225, 170, 140))
        if cfg.camera_turns or cfg.camera_shift != (0, 0):
            img = np.roll(np.rot90(img, cfg.camera_turns), cfg.camera_shift, axis=(0, 1))
        return np.ascontiguousarray(img)

    def _depth(self, i: int) -> int:
        d, b = 0, self.scene.blocks[i]
        while b.on >= 0:
            d, b = d + 1, self.scene.blocks[b.on]
        return d


STATE_DIM = 3 + 5 * len(COLOURS)


def state_slot(colour: str) -> int:
    """Where a colour's block starts in the state vector: present, x, y, held, resting on another."""
    return 3 + 5 * COLOUR_NAMES.index(colour)


def table_texture(size: int) -> np.ndarray:
    """A wooden-looking table top: smooth shading so frames are not flat colour."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    shade = 150 + 20 * np.sin(5 * xx + 2 * yy) + 10 * yy
    return np.stack([shade, shade * 0.85, shade * 0.65], -1).clip(0, 255).astype(np.uint8)
