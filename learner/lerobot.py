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
Files are split at episode boundaries once they reach LeRobot's sizes (100 MB of steps, 500 MB
of video; `FileSizes`), every 1,000 files starting a new chunk folder.

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


@dataclass(frozen=True)
class FileSizes:
    """Where a dataset's files end: a file is closed, at an episode's end, once it reaches its size
    (LeRobot's defaults: 100 MB of steps, 500 MB of video), and every `chunks_size` files make a
    chunk folder. An episode never spans two files."""

    data_mb: float = 100
    video_mb: float = 500
    chunks_size: int = 1000

    def where(self, file_number: int) -> dict[str, int]:
        chunk, file = divmod(file_number, self.chunks_size)
        return {"chunk_index": chunk, "file_index": file}


ROW_BYTES = 4 + 4 * 8 + 2  # a step's columns beside its action: timestamp, four indices, two flags
STEP_COLUMNS = (
    "action",
    "timestamp",
    "frame_index",
    "episode_index",
    "index",
    "task_index",
    "next.done",
    "next.success",
)


def export_lerobot(
    episodes: Iterable[Episode],
    out: Path,
    load_frames: Callable[[Episode], np.ndarray],
    progress: Callable[[], None] | None = None,
    sizes: FileSizes = FileSizes(),
) -> ExportReport:
    """Write `episodes` to `out` (replaced only once the new dataset is complete). An episode whose
    media are bad (`Rejected`) is skipped and named in the report; a service that does not answer
    stops the export."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".lerobot-", dir=out.parent))  # beside it: the rename stays on one disk
    try:
        episodes, frames, skipped = _write(staging, episodes, load_frames, progress, sizes)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
        return ExportReport(out, episodes, frames, skipped)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write(root: Path, episodes, load_frames, progress, sizes: FileSizes) -> tuple[int, int, dict[str, str]]:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    tasks: dict[str, int] = {}
    rows: dict[str, list] = {k: [] for k in STEP_COLUMNS}  # the data file being filled
    meta: list[dict] = []
    skipped: dict[str, str] = {}
    all_actions, steps, image_stats = [], 0, ImageStats()
    video = shape = action_dim = None
    data_files = video_files = 0

    def flush_data() -> None:
        nonlocal data_files, rows
        table = pa.table(
            {
                "action": pa.array(rows["action"], type=pa.list_(pa.float32(), action_dim)),
                "timestamp": pa.array(rows["timestamp"], pa.float32()),
                **{k: pa.array(rows[k], pa.int64()) for k in ("frame_index", "episode_index", "index", "task_index")},
                "next.done": pa.array(rows["next.done"], pa.bool_()),
                "next.success": pa.array(rows["next.success"], pa.bool_()),
            }
        )
        _parquet(pq, table, root / DATA_PATH.format(**sizes.where(data_files)))
        data_files, rows = data_files + 1, {k: [] for k in STEP_COLUMNS}

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
            if frames.shape[1:] != shape or actions.shape[1] != action_dim:
                skipped[str(episode.episode_id)] = f"frames {frames.shape[1:]} / actions {actions.shape[1]} differ"
                continue
            # a full file is closed before the next episode starts, so that no episode spans two
            if rows["index"] and len(rows["index"]) * (4 * action_dim + ROW_BYTES) >= sizes.data_mb * 1e6:
                flush_data()
            if video is not None and video.nbytes() >= sizes.video_mb * 1e6:
                video.close()
                video, video_files = None, video_files + 1
            if video is None:
                video = H264Writer(root / VIDEO_PATH.format(video_key=VIDEO_KEY, **sizes.where(video_files)), shape)
            n, index = len(actions), len(meta)
            task = tasks.setdefault(episode.instruction, len(tasks))
            rows["action"] += list(actions)
            rows["timestamp"] += list(np.arange(n, dtype=np.float32) / FPS)
            rows["frame_index"] += list(range(n))
            rows["episode_index"] += [index] * n
            rows["index"] += list(range(steps, steps + n))
            rows["task_index"] += [task] * n
            rows["next.done"] += [False] * (n - 1) + [True]
            rows["next.success"] += [False] * (n - 1) + [bool(episode.success)]
            video_from = video.frames / FPS
            video.add(frames[:n])
            image_stats.add(frames[:n])
            all_actions.append(actions)
            data_at = {f"data/{k}": v for k, v in sizes.where(data_files).items()}
            video_at = {f"videos/{VIDEO_KEY}/{k}": v for k, v in sizes.where(video_files).items()}
            meta.append(
                {
                    "episode_index": index,
                    "tasks": [episode.instruction],
                    "length": n,
                    **data_at,
                    "dataset_from_index": steps,
                    "dataset_to_index": steps + n,
                    **video_at,
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
            steps += n
    finally:
        if video is not None:
            video.close()
    if not meta:
        raise NothingToExport(f"no episode to export ({len(skipped)} skipped)")
    flush_data()

    _parquet(pq, pa.Table.from_pylist(meta), root / EPISODES_PATH.format(chunk_index=0, file_index=0))
    task_table = pd.DataFrame({"task_index": list(tasks.values())}, index=pd.Index(list(tasks), name="task"))
    task_table.to_parquet(root / "meta" / "tasks.parquet")
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": "worldfleet-tabletop",
        "total_episodes": len(meta),
        "total_frames": steps,
        "total_tasks": len(tasks),
        "chunks_size": sizes.chunks_size,
        "data_files_size_in_mb": sizes.data_mb,
        "video_files_size_in_mb": sizes.video_mb,
        "fps": FPS,
        "splits": {"train": f"0:{len(meta)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "features": _features(shape, action_dim),
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    index_values = np.arange(steps, dtype=np.float64)[:, None]
    frame_index = np.concatenate([np.arange(len(a)) for a in all_actions]).astype(np.float64)[:, None]
    stats = {
        "action": _stats(np.concatenate(all_actions)),
        VIDEO_KEY: image_stats.summary(),
        "timestamp": _stats(frame_index / FPS),
        "frame_index": _stats(frame_index),
        "index": _stats(index_values),
    }
    (root / "meta" / "stats.json").write_text(json.dumps(stats, indent=4))
    return len(meta), steps, skipped


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
    """Frames appended to one H.264 file (yuv420p; CRF 10 is near-lossless)."""

    def __init__(self, path: Path, shape: tuple[int, ...], crf: int = 10):
        import imageio_ffmpeg

        path.parent.mkdir(parents=True, exist_ok=True)
        h, w = shape[:2]
        self.path = path
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
        self.frames = 0

    def add(self, frames: np.ndarray) -> None:
        for frame in frames:
            self._writer.send(np.ascontiguousarray(frame))
        self.frames += len(frames)

    def nbytes(self) -> int:
        """What ffmpeg has written so far (it buffers a few frames)."""
        return self.path.stat().st_size if self.path.exists() else 0

    def close(self) -> None:
        self._writer.close()


class ImageStats:
    """Per-channel image statistics in [0, 1], as LeRobot normalises them, over every frame added."""

    def __init__(self):
        self.frames = self._pixels = 0
        self._sum = np.zeros(3)
        self._sq = np.zeros(3)
        self._min, self._max = np.full(3, 255.0), np.zeros(3)

    def add(self, frames: np.ndarray) -> None:
        pixels = frames.reshape(-1, 3).astype(np.float64) / 255
        self._sum += pixels.sum(0)
        self._sq += (pixels**2).sum(0)
        self._min, self._max = np.minimum(self._min, pixels.min(0)), np.maximum(self._max, pixels.max(0))
        self.frames += len(frames)
        self._pixels += len(pixels)

    def summary(self) -> dict:
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
