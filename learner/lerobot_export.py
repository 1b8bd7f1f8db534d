"""The fleet's episodes as a LeRobot v3.0 dataset, the format robot learners already load.

    DIR/meta/info.json                                         features, fps, counts, path templates
    DIR/meta/tasks.parquet                                     task string (index) -> task_index
    DIR/meta/stats.json                                        per-feature mean/std/min/max/count
    DIR/meta/episodes/chunk-000/file-000.parquet               one row per episode: length, tasks,
                                                               its rows and video span, provenance
    DIR/data/chunk-000/file-000.parquet                        one row per step: action, next.done, ...
    DIR/videos/observation.images.front/chunk-000/file-000.mp4 every episode's executed frames, H.264

One row per executed step: the camera frame the robot saw, and the action it took there. Each
episode's video span is [from_timestamp, to_timestamp) in the one concatenated file. Beside the
LeRobot columns, the episodes table keeps where each episode came from (`worldfleet/...`: the
episode id, robot, policy version and success), so a dataset can be traced back to the fleet.
One data file and one video file: a fleet export is sized for a training run, not the Hub's
100 MB file cap (`--since` bounds it).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infra.contracts.episode import Episode
from infra.errors import FleetError
from learner.media import Rejected

CODEBASE_VERSION = "v3.0"
FPS = 10  # the tabletop simulator's control rate: one action per rendered frame
VIDEO_KEY = "observation.images.front"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"


class NothingToExport(FleetError):
    hint = "check --since and --success-only against `fleet episodes summary`"


@dataclass(frozen=True)
class ExportReport:
    out: Path
    episodes: int
    frames: int
    skipped: dict[str, str]  # episode_id -> why


def export_lerobot(
    episodes: Iterable[Episode],
    out: Path,
    load_frames: Callable[[Episode], np.ndarray],
    progress: Callable[[], None] | None = None,
) -> ExportReport:
    """Write `episodes` to `out` (replaced only once the new dataset is complete). An episode whose
    media are bad (`Rejected`) is skipped and named in the report; a service that does not answer
    stops the export."""
    out = Path(out)
    staging = Path(tempfile.mkdtemp(prefix=".lerobot-", dir=out.parent if out.parent.exists() else None))
    try:
        report = _write(staging, episodes, load_frames, progress)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
        return ExportReport(out, report.episodes, report.frames, report.skipped)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write(root: Path, episodes, load_frames, progress) -> ExportReport:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    tasks: dict[str, int] = {}
    rows: dict[str, list] = {k: [] for k in ("action", "timestamp", "frame_index", "episode_index", "index")}
    rows |= {"task_index": [], "next.done": [], "next.success": []}
    meta: list[dict] = []
    skipped: dict[str, str] = {}
    video, shape, action_dim = None, None, None
    try:
        for episode in episodes:
            if progress:
                progress()
            actions = np.asarray(episode.actions, np.float32)
            try:
                frames = load_frames(episode)
            except Rejected as e:
                skipped[str(episode.episode_id)] = e.message
                continue
            if len(frames) < len(actions) or len(actions) == 0:
                skipped[str(episode.episode_id)] = f"{len(frames)} frames for {len(actions)} actions"
                continue
            if shape is None:
                shape, action_dim = frames.shape[1:], actions.shape[1]
                video = _VideoWriter(root / VIDEO_PATH.format(video_key=VIDEO_KEY, chunk_index=0, file_index=0), shape)
            if frames.shape[1:] != shape or actions.shape[1] != action_dim:
                skipped[str(episode.episode_id)] = f"frames {frames.shape[1:]} / actions {actions.shape[1]} differ"
                continue
            n, start, index = len(actions), len(rows["index"]), len(meta)
            task = tasks.setdefault(episode.instruction, len(tasks))
            rows["action"] += list(actions)
            rows["timestamp"] += list(np.arange(n, dtype=np.float32) / FPS)
            rows["frame_index"] += list(range(n))
            rows["episode_index"] += [index] * n
            rows["index"] += list(range(start, start + n))
            rows["task_index"] += [task] * n
            rows["next.done"] += [False] * (n - 1) + [True]
            rows["next.success"] += [False] * (n - 1) + [bool(episode.success)]
            video_from = video.frames / FPS
            video.add(frames[:n])
            meta.append(
                {
                    "episode_index": index,
                    "tasks": [episode.instruction],
                    "length": n,
                    "data/chunk_index": 0,
                    "data/file_index": 0,
                    "dataset_from_index": start,
                    "dataset_to_index": start + n,
                    f"videos/{VIDEO_KEY}/chunk_index": 0,
                    f"videos/{VIDEO_KEY}/file_index": 0,
                    f"videos/{VIDEO_KEY}/from_timestamp": video_from,
                    f"videos/{VIDEO_KEY}/to_timestamp": video.frames / FPS,
                    "meta/episodes/chunk_index": 0,
                    "meta/episodes/file_index": 0,
                    "worldfleet/episode_id": str(episode.episode_id),
                    "worldfleet/robot_id": episode.robot_id,
                    "worldfleet/policy_version": episode.model_versions.policy,
                    "worldfleet/success": bool(episode.success),
                }
            )
    finally:
        if video is not None:
            video.close()
    if not meta:
        raise NothingToExport(f"no episode to export ({len(skipped)} skipped)")

    actions = np.stack(rows["action"])
    table = pa.table(
        {
            "action": pa.array(list(actions), type=pa.list_(pa.float32(), action_dim)),
            "timestamp": pa.array(rows["timestamp"], pa.float32()),
            **{k: pa.array(rows[k], pa.int64()) for k in ("frame_index", "episode_index", "index", "task_index")},
            "next.done": pa.array(rows["next.done"], pa.bool_()),
            "next.success": pa.array(rows["next.success"], pa.bool_()),
        }
    )
    _parquet(pq, table, root / DATA_PATH.format(chunk_index=0, file_index=0))
    _parquet(pq, pa.Table.from_pylist(meta), root / EPISODES_PATH.format(chunk_index=0, file_index=0))
    task_table = pd.DataFrame({"task_index": list(tasks.values())}, index=pd.Index(list(tasks), name="task"))
    task_table.to_parquet(root / "meta" / "tasks.parquet")
    features = _features(shape, action_dim)
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": "worldfleet-tabletop",
        "total_episodes": len(meta),
        "total_frames": len(table),
        "total_tasks": len(tasks),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "fps": FPS,
        "splits": {"train": f"0:{len(meta)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "features": features,
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    stats = {
        "action": _stats(actions),
        VIDEO_KEY: video.stats(),
        **{k: _stats(np.asarray(rows[k], np.float64)[:, None]) for k in ("timestamp", "frame_index", "index")},
    }
    (root / "meta" / "stats.json").write_text(json.dumps(stats, indent=4))
    return ExportReport(root, len(meta), len(table), skipped)


def _features(shape: tuple[int, ...], action_dim: int) -> dict:
    h, w, c = shape
    scalar = {"shape": [1], "names": None}
    return {
        VIDEO_KEY: {
            "dtype": "video",
            "shape": [h, w, c],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": h,
                "video.width": w,
                "video.codec": "h264",
                "video.pix_fmt": "yuv420p",
                "video.is_depth_map": False,
                "video.fps": FPS,
                "video.channels": c,
                "has_audio": False,
            },
        },
        "action": {"dtype": "float32", "shape": [action_dim], "names": [f"a{i}" for i in range(action_dim)]},
        "next.done": {"dtype": "bool", **scalar},
        "next.success": {"dtype": "bool", **scalar},
        "timestamp": {"dtype": "float32", **scalar},
        "frame_index": {"dtype": "int64", **scalar},
        "episode_index": {"dtype": "int64", **scalar},
        "index": {"dtype": "int64", **scalar},
        "task_index": {"dtype": "int64", **scalar},
    }


def _stats(values: np.ndarray) -> dict:
    return {
        "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(),
        "min": values.min(0).tolist(),
        "max": values.max(0).tolist(),
        "count": [len(values)],
    }


def _parquet(pq, table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


class _VideoWriter:
    """Frames appended to one H.264 file (yuv420p, near-lossless), with per-channel image stats in
    [0, 1] as LeRobot normalises them."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        import imageio_ffmpeg

        path.parent.mkdir(parents=True, exist_ok=True)
        h, w = shape[:2]
        self._writer = imageio_ffmpeg.write_frames(
            str(path),
            (w, h),
            fps=FPS,
            codec="libx264",
            pix_fmt_out="yuv420p",
            quality=None,
            output_params=["-crf", "10", "-preset", "veryfast", "-g", str(FPS)],
            macro_block_size=1,
            ffmpeg_log_level="error",
        )
        self._writer.send(None)
        self.frames = self._pixels = 0
        self._sum = np.zeros(3)
        self._sq = np.zeros(3)
        self._min, self._max = np.full(3, 255.0), np.zeros(3)

    def add(self, frames: np.ndarray) -> None:
        for frame in frames:
            self._writer.send(np.ascontiguousarray(frame))
        pixels = frames.reshape(-1, 3).astype(np.float64) / 255
        self._sum += pixels.sum(0)
        self._sq += (pixels**2).sum(0)
        self._min, self._max = np.minimum(self._min, pixels.min(0)), np.maximum(self._max, pixels.max(0))
        self.frames += len(frames)
        self._pixels += len(pixels)

    def stats(self) -> dict:
        mean = self._sum / max(1, self._pixels)
        std = np.sqrt(np.maximum(self._sq / max(1, self._pixels) - mean**2, 0))

        def per_channel(v):
            return [[[float(x)]] for x in v]  # (3, 1, 1), channel-first as LeRobot stores image stats

        return {
            "mean": per_channel(mean),
            "std": per_channel(std),
            "min": per_channel(self._min),
            "max": per_channel(self._max),
            "count": [self.frames],
        }

    def close(self) -> None:
        self._writer.close()
