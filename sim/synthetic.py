"""Synthetic episodes shaped like real ones, for the demo, the ingest benchmark and tests.

Frames show a few coloured blocks moving over a textured table with sensor noise, so they
compress like camera frames rather than like constants or white noise. The default sizes are
the benchmark's: 32 executed frames of 64x64 RGB, one decision of 8 candidates of 8 frames.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from infra.contracts.episode import (
    MEDIA_ARRAYS,
    ArraySpec,
    CandidateRecord,
    Decision,
    Episode,
    EpisodeCore,
    MediaRef,
    ModelVersions,
    SuccessSource,
)

TASKS = {
    "reach-red": "reach the red block",
    "push-blue-left": "push the blue block to the left region",
    "stack-green-on-yellow": "put the green block on the yellow block",
}
COLOURS = np.array([[220, 40, 40], [40, 80, 220], [40, 180, 60], [230, 200, 40]], dtype=np.float32)


@dataclass(frozen=True)
class EpisodeShape:
    steps: int = 32
    size: int = 64
    decisions: int = 1
    candidates: int = 8
    imagined_frames: int = 8
    action_dim: int = 4
    # Per-pixel sensor noise (std, in grey levels). It decides how well frames compress: a real
    # camera's noise leaves ~75% of the bytes, a noise-free simulator render ~1%.
    camera_noise: float = 2.0


def render_clip(rng: np.random.Generator, frames: int, size: int, noise: float = 2.0) -> np.ndarray:
    """A clip of blocks drifting over a table: uint8 (frames, size, size, 3)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    table = 120 + 25 * np.sin(6 * xx + 3 * yy)[..., None] + rng.normal(0, 3, (1, 1, 3))
    clip = np.repeat(table[None], frames, axis=0)
    n_blocks = rng.integers(2, 5)
    pos = rng.uniform(0.15, 0.85, (n_blocks, 2))
    vel = rng.normal(0, 0.01, (n_blocks, 2))
    half = max(size // 16, 1)
    for t in range(frames):
        for b in range(n_blocks):
            cy, cx = ((pos[b] + vel[b] * t).clip(0.1, 0.9) * size).astype(int)
            clip[t, cy - half : cy + half, cx - half : cx + half] = COLOURS[b]
    if noise:
        clip += rng.normal(0, noise, clip.shape)
    return clip.clip(0, 255).astype(np.uint8)


def synthetic_media(rng: np.random.Generator, shape: EpisodeShape) -> tuple[np.ndarray, np.ndarray]:
    """Executed frames (T, H, W, 3) and imagined videos (D, K, F, H, W, 3), uint8."""
    executed = render_clip(rng, shape.steps, shape.size, shape.camera_noise)
    imagined = np.stack(
        [
            np.stack(
                [
                    render_clip(rng, shape.imagined_frames, shape.size, shape.camera_noise)
                    for _ in range(shape.candidates)
                ]
            )
            for _ in range(shape.decisions)
        ]
    )
    return executed, imagined


def synthetic_core(
    rng: np.random.Generator,
    robot_id: str,
    shape: EpisodeShape = EpisodeShape(),
    policy_version: str = "base",
    success_rate: float = 0.5,
) -> EpisodeCore:
    """An episode's facts: task, labels, decisions with scored and rejected candidates, timings."""
    task_id = str(rng.choice(list(TASKS)))
    start = datetime.now(UTC)
    decisions = []
    for d in range(shape.decisions):
        scores = rng.uniform(0, 1, shape.candidates)
        rejected = rng.uniform(0, 1, shape.candidates) < 0.2
        chosen = int(np.argmax(np.where(rejected, -1, scores))) if not rejected.all() else None
        decisions.append(
            Decision(
                step=d * shape.steps // shape.decisions,
                candidates=[
                    CandidateRecord(
                        index=i,
                        score=float(scores[i]),
                        rejected=bool(rejected[i]),
                        rejection_reason="exceeds_speed_limit" if rejected[i] else None,
                    )
                    for i in range(shape.candidates)
                ],
                chosen=chosen,
                latency_ms=float(rng.uniform(80, 200)),
            )
        )
    n_rejected = sum(c.rejected for d in decisions for c in d.candidates)
    core = EpisodeCore(
        episode_id=uuid.UUID(bytes=rng.bytes(16), version=4),
        robot_id=robot_id,
        model_versions=ModelVersions(policy=policy_version, world_model=policy_version, idm=policy_version),
        task_id=task_id,
        instruction=TASKS[task_id],
        started_at=start,
        ended_at=start + timedelta(seconds=shape.steps * 0.1),
        success=bool(rng.uniform() < success_rate),
        success_source=SuccessSource.environment,
        actions=rng.normal(0, 0.3, (shape.steps, shape.action_dim)).round(4).tolist(),
        decisions=decisions,
        rejections={"exceeds_speed_limit": int(n_rejected)} if n_rejected else {},
        timings_ms={"imagine": 90.0, "inverse_dynamics": 12.0, "critic": 8.0},
    )
    return core


def robot_id(r: int) -> str:
    """The id of the synthetic fleet's robot number `r`."""
    return f"robot-{r:03d}"


def episode_stream(
    seed: int | None, episodes: int, robots: int, shape: EpisodeShape = EpisodeShape(), pool: int = 32
) -> Iterator[tuple[EpisodeCore, np.ndarray, np.ndarray]]:
    """`episodes` episodes over `robots` robots, each with its own id and labels.

    Rendering noisy frames costs more than shipping them, so media are rendered for a pool of
    episodes once and reused; ids, robots, tasks and success labels are drawn per episode.
    """
    rng = np.random.default_rng(seed)
    media = [synthetic_media(rng, shape) for _ in range(min(episodes, pool))]
    for i in range(episodes):
        yield synthetic_core(rng, robot_id(i % robots), shape), *media[i % len(media)]


def synthetic_history(
    seed: int,
    episodes: int,
    robots: int,
    versions: int,
    span_s: float,
    shape: EpisodeShape = EpisodeShape(steps=24, decisions=4, candidates=4),
) -> Iterator[Episode]:
    """A fleet's indexed past: episodes spread evenly over the last `span_s` seconds, each version in
    its own stretch of time with its own success rate. Media references are placeholders (nothing
    is in S3): for the index, the dashboard's tables and their benchmark."""
    rng = np.random.default_rng(seed)
    spec = ArraySpec(shape=[1], dtype="uint8")
    placeholder = {"bucket": "none", "sha256": "0" * 64, "nbytes": 0, "arrays": dict.fromkeys(MEDIA_ARRAYS, spec)}
    start = datetime.now(UTC) - timedelta(seconds=span_s)
    rates = rng.uniform(0.2, 0.8, versions)
    for i in range(episodes):
        version = i * versions // episodes
        core = synthetic_core(rng, robot_id(i % robots), shape, str(version + 1), float(rates[version]))
        at = start + timedelta(seconds=span_s * i / episodes)
        yield Episode(
            **core.model_dump(exclude={"started_at", "ended_at"}),
            started_at=at,
            ended_at=at + timedelta(seconds=4),
            media=MediaRef(key=core.media_key(), **placeholder),
            published_at=at + timedelta(seconds=4),
        )
