"""Training data for the world model's three stages, all generated here.

(a) "internet video": action-free clips of generic object dynamics (sliding, pushed by unseen
    forces, toppling, distractors, lighting and camera changes) with short captions;
(b) "human point of view": the robot's tasks done by another embodiment (a hand) from other
    viewpoints, with task captions and no actions;
(c) robot logs: this robot's frames, actions and success labels from scripted, noisy demos.
Every clip also gets a detailed caption from the caption upsampler.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from sim.scripted import run_expert
from sim.tabletop import COLOURS, REGIONS, TabletopConfig, TabletopEnv, Task, state_slot, table_texture
from worldmodel.captions import Captioner, ObjectTrack, SceneDescription, TemplateCaptioner

if TYPE_CHECKING:
    from worldmodel.policy import WorldModelPolicy

DISTRACTOR_COLOURS = {"purple": (140, 60, 170), "orange": (240, 140, 40), "white": (235, 235, 235)}


@dataclass
class Clip:
    stage: str
    frames: np.ndarray  # uint8 (T, S, S, 3)
    caption: str
    detailed_caption: str
    actions: np.ndarray | None = None  # float32 (T-1, 3), robot logs only
    success: bool | None = None
    task_id: str | None = None
    points: np.ndarray | None = None  # float32 (T, 2, 2): the task's object and goal, robot logs only
    # Fleet episodes only: each decision's chosen imagined future, uint8 (D, F, S, S, 3), and the
    # step it was imagined from (D,): what the robot expected, beside what then happened.
    plans: np.ndarray | None = None
    plan_steps: np.ndarray | None = None


# -- (a) internet video ---------------------------------------------------------------------------
def internet_clips(
    n: int, seed: int, size: int = 64, frames: int = 16, captioner: Captioner = TemplateCaptioner()
) -> list[Clip]:
    rng = np.random.default_rng(seed)
    palette = {**COLOURS, **DISTRACTOR_COLOURS}
    names = list(palette)
    table = table_texture(size).astype(np.float32)
    clips = []
    for _ in range(n):
        k = int(rng.integers(2, 6))
        colours = [names[i] for i in rng.choice(len(names), k, replace=False)]
        pos = rng.uniform(0.15, 0.85, (k, 2))
        vel = rng.normal(0, 0.02, (k, 2))
        halves = np.tile(rng.uniform(0.04, 0.08, (k, 1)), (1, 2))  # (half width, half height)
        topple = int(rng.integers(frames // 3, frames)) if rng.uniform() < 0.3 else -1
        kick_at, kicked = int(rng.integers(1, frames)), int(rng.integers(k))
        light = rng.uniform(0.7, 1.2) * rng.uniform(0.9, 1.1, 3)
        pan = rng.integers(-1, 2, 2) if rng.uniform() < 0.3 else np.zeros(2, int)
        start = pos.copy()
        video = np.empty((frames, size, size, 3), np.uint8)
        halves[0] = (0.03, 0.09) if topple >= 0 else halves[0]  # a tall object that may fall over
        for t in range(frames):
            if t == kick_at:
                vel[kicked] += rng.normal(0, 0.05, 2)  # pushed by a force we do not see
            if t == topple:
                halves[0] = halves[0][::-1].copy()
            pos = np.clip(pos + vel, 0.08, 0.92)
            vel *= 0.85  # friction
            img = table.copy()
            for c, p, h in zip(colours, pos, halves, strict=True):
                (x0, y0), (x1, y1) = ((p - h) * size).astype(int), ((p + h) * size).astype(int)
                img[max(y0, 0) : y1, max(x0, 0) : x1] = palette[c]
            img = np.roll(img * light, tuple(pan * t), axis=(0, 1))
            video[t] = img.clip(0, 255).astype(np.uint8)
        mover = int(np.argmax(np.linalg.norm(pos - start, axis=1)))
        tracks = [ObjectTrack(c, tuple(s), tuple(e)) for c, s, e in zip(colours, start, pos, strict=True)]
        notes = (["the tall block topples over"] if topple >= 0 else []) + (["the camera pans"] if pan.any() else [])
        short = f"a {colours[mover]} block slides" + (" and something falls over" if topple >= 0 else "")
        scene = SceneDescription(tracks, actor=None, notes=notes)
        clips.append(Clip("internet", video, short, captioner.upsample(short, scene, video)))
    return clips


# -- (b) human point of view and (c) robot logs ------------------------------------------------
def human_pov_clips(n: int, seed: int, size: int = 64, captioner: Captioner = TemplateCaptioner()) -> list[Clip]:
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        config = TabletopConfig(
            size=size,
            embodiment="human",
            camera_turns=int(rng.integers(4)),
            camera_shift=tuple(int(v) for v in rng.integers(-size // 10, size // 10 + 1, 2)),
        )
        env = TabletopEnv(config)
        log = run_expert(env, seed=_episode_seed("human_pov", seed, i), noise=0.15)
        clips.append(_task_clip("human_pov", env, log, captioner, "human hand", keep_actions=False))
    return clips


def robot_logs(
    n: int, seed: int, size: int = 64, noise: float = 0.2, captioner: Captioner = TemplateCaptioner()
) -> list[Clip]:
    env = TabletopEnv(TabletopConfig(size=size))
    return [
        _task_clip(
            "robot", env, run_expert(env, _episode_seed("robot", seed, i), noise), captioner, "robot gripper", True
        )
        for i in range(n)
    ]


def _episode_seed(stage: str, seed: int, i: int) -> int:
    """Distinct, reproducible scenes per stage: the human and robot data never share one."""
    return int(np.random.SeedSequence([seed, i, sum(map(ord, stage))]).generate_state(1)[0])


def _task_clip(stage: str, env: TabletopEnv, log: dict, captioner: Captioner, actor: str, keep_actions: bool) -> Clip:
    first, last = log["states"][0], log["states"][-1]
    tracks = []
    for colour in COLOURS:
        k = state_slot(colour)
        if first[k]:
            tracks.append(ObjectTrack(colour, tuple(first[k + 1 : k + 3]), tuple(last[k + 1 : k + 3])))
    scene = SceneDescription(tracks, actor=actor)
    return Clip(
        stage=stage,
        frames=log["frames"],
        caption=log["instruction"],
        detailed_caption=captioner.upsample(log["instruction"], scene, log["frames"]),
        actions=log["actions"] if keep_actions else None,
        success=bool(log["success"]) if keep_actions else None,
        task_id=log["task_id"],
        # In image coordinates only where the camera is the robot's own (no turn or shift).
        points=task_points(Task.parse(log["task_id"]), log["states"]) if keep_actions else None,
    )


def task_points(task: Task, states: np.ndarray) -> np.ndarray:
    """Where the instruction points, per state (T, STATE_DIM) -> (T, 2, 2): the object, then the goal
    (the object itself to reach it, the region's centre to push it, the other block to stack on)."""

    def block(colour: str) -> np.ndarray:
        k = state_slot(colour)
        return states[:, k + 1 : k + 3]

    obj = block(task.colour)
    if task.kind == "push":
        x0, y0, x1, y1 = REGIONS[task.target]
        goal = np.broadcast_to(np.array([(x0 + x1) / 2, (y0 + y1) / 2], np.float32), obj.shape)
    else:
        goal = block(task.target) if task.kind == "stack" else obj
    return np.stack([obj, goal], axis=1).astype(np.float32)


# -- as training windows ------------------------------------------------------------------------
@dataclass
class StageData:
    """Windows of (first frame, next F frames, caption) drawn from clips, as model tensors."""

    clips: list[Clip]
    frames: list[torch.Tensor]  # per clip (T, 3, S, S)

    @classmethod
    def build(cls, clips: list[Clip], policy: WorldModelPolicy) -> StageData:
        return cls(clips, [policy.prepare(c.frames) for c in clips])

    def video_batch(self, rng: np.random.Generator, n: int, future: int) -> VideoBatch:
        firsts, futures, texts, succeeded, points = [], [], [], [], []
        for i in rng.integers(len(self.clips), size=n):
            frames, clip = self.frames[i], self.clips[i]
            t = int(rng.integers(0, max(len(frames) - future, 1)))
            window = frames[t : t + future + 1]
            if len(window) < future + 1:  # a short clip: hold its last frame
                window = torch.cat([window, window[-1:].expand(future + 1 - len(window), -1, -1, -1)])
            firsts.append(window[0])
            futures.append(window[1:])
            texts.append(clip.detailed_caption if rng.uniform() < 0.5 else clip.caption)
            succeeded.append(clip.success is not False)  # action-free clips carry no label
            points.append(torch.as_tensor(clip.points[t]) if clip.points is not None else torch.full((2, 2), torch.nan))
        return VideoBatch(
            torch.stack(firsts), torch.stack(futures), texts, torch.tensor(succeeded), torch.stack(points)
        )


@dataclass
class VideoBatch:
    first: torch.Tensor  # (B, 3, S, S)
    future: torch.Tensor  # (B, F, 3, S, S)
    texts: list[str]
    succeeded: torch.Tensor  # (B,) bool
    points: torch.Tensor  # (B, 2, 2) the instruction's object and goal; NaN where not known


# -- storage: arrays in .npz, text in JSON; no pickle --------------------------------------------
ARRAYS = ("frames", "actions", "points", "plans", "plan_steps")


def save_clips(clips: list[Clip], path: Path) -> None:
    """Clips to `clips.npz` + `clips.json`. Actions and points are kept where a clip has them: a
    clip without actions has none stored, one without points NaN points (the grounding loss skips
    NaN rows), so fleet episodes and robot logs share one training set without losing labels."""
    path.mkdir(parents=True, exist_ok=True)
    lengths = [len(c.frames) for c in clips]
    arrays = {"frames": np.concatenate([c.frames for c in clips]), "lengths": np.array(lengths)}
    if all(c.actions is not None for c in clips):
        arrays["actions"] = np.concatenate([c.actions for c in clips]).astype(np.float32)
    if any(c.points is not None for c in clips):
        arrays["points"] = np.concatenate(
            [c.points if c.points is not None else np.full((len(c.frames), 2, 2), np.nan, np.float32) for c in clips]
        ).astype(np.float32)
    with_plans = [c for c in clips if c.plans is not None]
    if with_plans:
        arrays["plans"] = np.concatenate([c.plans for c in with_plans])
        arrays["plan_steps"] = np.concatenate([c.plan_steps for c in with_plans]).astype(np.int64)
        arrays["plan_counts"] = np.array([0 if c.plans is None else len(c.plans) for c in clips])
    np.savez(path / "clips.npz", **arrays)
    meta = [{k: v for k, v in asdict(c).items() if k not in ARRAYS} for c in clips]
    (path / "clips.json").write_text(json.dumps(meta, indent=1))


def load_clips(path: Path) -> list[Clip]:
    meta = json.loads((path / "clips.json").read_text())
    with np.load(path / "clips.npz", allow_pickle=False) as npz:
        frames, lengths = npz["frames"], npz["lengths"]
        actions = npz["actions"] if "actions" in npz.files else None
        points = npz["points"] if "points" in npz.files else None
        plans = npz["plans"] if "plans" in npz.files else None
        plan_steps = npz["plan_steps"] if plans is not None else None
        plan_counts = npz["plan_counts"] if plans is not None else np.zeros(len(meta), np.int64)
    clips, f, a, d = [], 0, 0, 0
    for m, n, k in zip(meta, lengths, plan_counts, strict=True):
        acts = actions[a : a + n - 1] if actions is not None else None
        pts = points[f : f + n] if points is not None else None
        clips.append(
            Clip(
                frames=frames[f : f + n],
                actions=acts,
                points=None if pts is None or np.isnan(pts).all() else pts,
                plans=plans[d : d + k] if k else None,
                plan_steps=plan_steps[d : d + k] if k else None,
                **m,
            )
        )
        f, a, d = f + n, a + n - 1, d + k
    return clips
