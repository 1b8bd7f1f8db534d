"""LeRobot v3.0 datasets, the format robot learners already load: the fleet's episodes written
as one (`export_lerobot`), and one read as training clips (`import_lerobot`).

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

Imported, each episode is a clip of its frames and the actions between them (the last row's
action has no frame after it, so a clip of n rows keeps n - 1 actions), captioned with its task,
labelled with `next.success` where the dataset has it. Any v3.0 dataset with one video key and an
`action` feature reads; whether its frames and actions suit a policy is the trainer's check.
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
from infra.errors import FleetError, UsageError
from learner.media import Rejected
from worldmodel.stage_data import Clip

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
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".lerobot-", dir=out.parent))  # beside it: the rename stays on one disk
    try:
        episodes, frames, skipped = _write(staging, episodes, load_frames, progress)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
        return ExportReport(out, episodes, frames, skipped)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write(root: Path, episodes, load_frames, progress) -> tuple[int, int, dict[str, str]]:
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
                video = H264Writer(root / VIDEO_PATH.format(video_key=VIDEO_KEY, chunk_index=0, file_index=0), shape)
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
    return len(meta), len(table), skipped


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


class H264Writer:
    """Frames appended to one H.264 file (yuv420p; CRF 10 is near-lossless), with per-channel image
    stats in [0, 1] as LeRobot normalises them."""

    def __init__(self, path: Path, shape: tuple[int, ...], crf: int = 10):
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
            output_params=["-crf", str(crf), "-preset", "veryfast", "-g", str(FPS)],
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


# -- import -----------------------------------------------------------------------------------------
def import_lerobot(root: Path, stage: str = "replay") -> list[Clip]:
    """A LeRobot v3.0 dataset's episodes as training clips (frames, actions, task, success)."""
    import pyarrow.parquet as pq

    root = Path(root)
    info = _info(root)
    videos = [k for k, f in info["features"].items() if f["dtype"] == "video"]
    if len(videos) != 1 or "action" not in info["features"]:
        raise UsageError(f"{root}: needs one video feature and an action feature, has {sorted(info['features'])}")
    key = videos[0]
    import pyarrow as pa

    data = pa.concat_tables([pq.read_table(p) for p in sorted((root / "data").glob("chunk-*/file-*.parquet"))])
    data = data.to_pydict()
    episodes = sorted(
        (
            row
            for path in sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
            for row in pq.read_table(path).to_pylist()
        ),
        key=lambda row: row["episode_index"],
    )
    decoded: dict[tuple[int, int], np.ndarray] = {}
    clips = []
    for row in episodes:
        where = (row[f"videos/{key}/chunk_index"], row[f"videos/{key}/file_index"])
        if where not in decoded:
            path = root / info["video_path"].format(video_key=key, chunk_index=where[0], file_index=where[1])
            decoded[where] = decode_video(path)
        first = round(row[f"videos/{key}/from_timestamp"] * info["fps"])
        n = row["length"]
        frames = decoded[where][first : first + n]
        steps = slice(row["dataset_from_index"], row["dataset_to_index"])
        if frames.shape[1] != frames.shape[2]:
            raise UsageError(f"{root}: {key} is {frames.shape[2]}x{frames.shape[1]}; training clips are square")
        if len(frames) != n or steps.stop - steps.start != n:
            raise UsageError(f"{root}: episode {row['episode_index']} spans {len(frames)} frames for {n} rows")
        actions = np.asarray(data["action"][steps], np.float32)
        success = data["next.success"][steps][-1] if "next.success" in data else None
        task = row["tasks"][0]
        clips.append(Clip(stage, frames, task, task, actions[: n - 1], success))
    return clips


def _info(root: Path) -> dict:
    try:
        info = json.loads((root / "meta" / "info.json").read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{root} is not a LeRobot dataset: {e}") from e
    if info.get("codebase_version") != CODEBASE_VERSION:
        raise UsageError(
            f"{root} is a LeRobot {info.get('codebase_version')} dataset; this reads {CODEBASE_VERSION}",
            hint="convert it with LeRobot's convert_dataset_v21_to_v30",
        )
    return info


def decode_video(path: Path) -> np.ndarray:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    w, h = next(reader)["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader])
