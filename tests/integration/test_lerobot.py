"""`fleet export lerobot` and `fleet import lerobot`: indexed episodes with media in real S3,
written as a LeRobot v3.0 dataset, read back with pyarrow and a video decoder field by field, and
imported again as training clips."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import imageio_ffmpeg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from infra.clients import s3_client
from infra.contracts import arrays
from infra.contracts.episode import ArraySpec, Episode, MediaRef
from infra.errors import UsageError
from learner.dataset import load_clips
from learner.episode_index import EpisodeIndex, IndexReader, Provenance
from learner.finetune import FinetuneJob
from learner.finetune_worker import Objective
from learner.lerobot import FPS, VIDEO_KEY, FileSizes, export_lerobot, import_lerobot
from learner.media import load_media
from sim.synthetic import EpisodeShape, render_clip, synthetic_core
from worldmodel.policy import WorldModelPolicy

pytestmark = pytest.mark.integration

SIZE = 32
# What a LeRobot v3.0 reader looks for in meta/info.json (lerobot/datasets/utils.py, v3.0).
INFO_KEYS = {
    "codebase_version",
    "robot_type",
    "total_episodes",
    "total_frames",
    "total_tasks",
    "chunks_size",
    "data_files_size_in_mb",
    "video_files_size_in_mb",
    "fps",
    "splits",
    "data_path",
    "video_path",
    "features",
}
DEFAULT_FEATURES = {
    "timestamp": "float32",
    "frame_index": "int64",
    "episode_index": "int64",
    "index": "int64",
    "task_index": "int64",
}
EPISODE_COLUMNS = {
    "episode_index",
    "tasks",
    "length",
    "data/chunk_index",
    "data/file_index",
    "dataset_from_index",
    "dataset_to_index",
    "meta/episodes/chunk_index",
    "meta/episodes/file_index",
    *(f"videos/{VIDEO_KEY}/{part}" for part in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")),
}


def _indexed_episode(settings, rng, steps: int, success: bool) -> tuple[Episode, np.ndarray]:
    shape = EpisodeShape(steps=steps, decisions=1, candidates=2, action_dim=3)  # the tabletop's actions
    core = synthetic_core(rng, "robot-007", shape).model_copy(update={"success": success})
    # the start, then one frame per step; each a shade brighter, so that a frame one step off shows
    shade = (np.arange(steps + 1) * 9).astype(np.uint8)[:, None, None, None]
    frames = render_clip(rng, steps + 1, SIZE, noise=0) // 2 + shade
    media = {"executed_frames": frames, "imagined_videos": np.zeros((1, 2, 2, SIZE, SIZE, 3), np.uint8)}
    blob = arrays.encode(media)
    s3_client(settings).put_object(settings.s3.episodes_bucket, core.media_key(), io.BytesIO(blob), len(blob))
    ref = MediaRef(
        bucket=settings.s3.episodes_bucket,
        key=core.media_key(),
        sha256=arrays.sha256(blob),
        nbytes=len(blob),
        arrays={k: ArraySpec(shape=list(v.shape), dtype=v.dtype.name) for k, v in media.items()},
    )
    return Episode(**core.model_dump(), media=ref, published_at=datetime.now(UTC)), frames


def test_the_export_is_a_lerobot_v3_dataset_that_reads_back_step_for_step(plane, tmp_path):
    rng = np.random.default_rng(3)
    made = [_indexed_episode(plane, rng, steps, success) for steps, success in ((12, True), (7, False), (9, True))]
    replaced = made[2][0]  # its media are replaced after ingest: the export skips it and says why
    s3_client(plane).put_object(plane.s3.episodes_bucket, replaced.media.key, io.BytesIO(b"other"), 5)
    with EpisodeIndex(plane.index_path) as index:
        index.record([(e, Provenance("t", 0, i, 0.0)) for i, (e, _) in enumerate(made)])

    s3 = s3_client(plane)
    report = export_lerobot(
        IndexReader(plane.index_path).query(),
        tmp_path / "dataset",
        lambda e: load_media(s3, plane, e.media)["executed_frames"],
    )
    kept = made[:2]
    root = report.out
    assert list(report.skipped) == [str(replaced.episode_id)] and "sha256" in report.skipped[str(replaced.episode_id)]

    info = json.loads((root / "meta" / "info.json").read_text())
    assert set(info) == INFO_KEYS and info["codebase_version"] == "v3.0" and info["fps"] == FPS
    lengths = [len(e.actions) for e, _ in kept]
    assert (info["total_episodes"], info["total_frames"]) == (2, sum(lengths))
    assert info["total_tasks"] == len({e.instruction for e, _ in kept})
    assert info["splits"] == {"train": "0:2"}
    for name, dtype in DEFAULT_FEATURES.items():
        assert info["features"][name] == {"dtype": dtype, "shape": [1], "names": None}
    video = info["features"][VIDEO_KEY]
    assert video["dtype"] == "video" and video["shape"] == [SIZE, SIZE, 3]
    assert video["info"]["video.codec"] == "h264" and video["info"]["video.fps"] == FPS

    data = pq.read_table(root / info["data_path"].format(chunk_index=0, file_index=0)).to_pydict()
    assert set(data) == {k for k, f in info["features"].items() if f["dtype"] != "video"}
    assert data["index"] == list(range(sum(lengths)))
    episodes = pq.read_table(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert set(episodes[0]) >= EPISODE_COLUMNS
    tasks = pd.read_parquet(root / "meta" / "tasks.parquet")
    assert tasks.index.name == "task"

    decoded = np.stack(
        [
            np.frombuffer(f, np.uint8).reshape(SIZE, SIZE, 3)
            for f in _frames(root / info["video_path"].format(video_key=VIDEO_KEY, chunk_index=0, file_index=0))
        ]
    )
    assert len(decoded) == info["total_frames"]
    for row, (episode, frames) in zip(episodes, kept, strict=True):
        n, start = len(episode.actions), row["dataset_from_index"]
        assert row["worldfleet/episode_id"] == str(episode.episode_id)
        assert (row["length"], row["dataset_to_index"]) == (n, start + n) and row["tasks"] == [episode.instruction]
        steps = slice(start, start + n)
        assert data["frame_index"][steps] == list(range(n)) and set(data["episode_index"][steps]) == {
            row["episode_index"]
        }
        assert np.allclose(data["action"][steps], np.asarray(episode.actions, np.float32))
        assert data["next.done"][steps] == [False] * (n - 1) + [True]
        assert data["next.success"][steps][-1] is episode.success and not any(data["next.success"][steps][:-1])
        assert tasks.loc[episode.instruction, "task_index"] == data["task_index"][start]
        # its span of the video is its own frames, the ones the robot saw before each action
        first, last = (round(row[f"videos/{VIDEO_KEY}/{t}_timestamp"] * FPS) for t in ("from", "to"))
        assert (first, last) == (start, start + n)
        error = np.abs(decoded[first:last].astype(int) - frames[:n].astype(int)).mean()
        assert error < 4, f"decoded frames differ from the robot's by {error:.1f} grey levels"
        one_late = np.abs(decoded[first:last].astype(int) - frames[1 : n + 1].astype(int)).mean()
        assert error < one_late / 2, "each step's frame must be the one before its action, not after"

    stats = json.loads((root / "meta" / "stats.json").read_text())
    actions = np.concatenate([np.asarray(e.actions, np.float32) for e, _ in kept])
    assert np.allclose(stats["action"]["mean"], actions.mean(0), atol=1e-5)
    assert stats["action"]["count"] == [len(actions)]
    assert np.asarray(stats[VIDEO_KEY]["mean"]).shape == (3, 1, 1)


def _frames(path):
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    assert tuple(meta["size"]) == (SIZE, SIZE)
    return list(reader)


def test_an_exported_dataset_imports_as_training_clips_of_the_same_steps(plane, tmp_path, tiny_policy_dir):
    rng = np.random.default_rng(5)
    made = [_indexed_episode(plane, rng, steps, success) for steps, success in ((14, True), (12, False))]
    with EpisodeIndex(plane.index_path) as index:
        index.record([(e, Provenance("t", 0, i, 0.0)) for i, (e, _) in enumerate(made)])
    s3 = s3_client(plane)
    dataset = tmp_path / "dataset"
    export_lerobot(
        IndexReader(plane.index_path).query(), dataset, lambda e: load_media(s3, plane, e.media)["executed_frames"]
    )

    result = CliRunner().invoke(app, ["import", "lerobot", str(dataset), "--out", str(tmp_path / "clips")])
    assert result.exit_code == 0, result.output
    assert "2 episodes, 26 frames" in result.output
    clips = load_clips(tmp_path / "clips")
    for clip, (episode, frames) in zip(clips, made, strict=True):
        n = len(episode.actions)
        assert clip.stage == "replay" and clip.caption == episode.instruction and clip.success is episode.success
        assert len(clip.frames) == n and np.allclose(clip.actions, np.asarray(episode.actions, np.float32)[: n - 1])
        assert np.abs(clip.frames.astype(int) - frames[:n].astype(int)).mean() < 4
    # and they are what fine-tuning reads: every loss of a step on them is finite, and so are its gradients
    objective = Objective(WorldModelPolicy.load(tiny_policy_dir), clips, FinetuneJob(batch=2, imagined_windows=0))
    loss, parts = objective(0, 0)
    loss.backward()
    assert set(parts) == {"video", "idm", "critic"} and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in objective.parameters() if p.grad is not None)


def test_files_split_at_their_size_between_episodes_and_chunks_hold_chunks_size_files(plane, tmp_path):
    rng = np.random.default_rng(6)
    made = [_indexed_episode(plane, rng, steps, True) for steps in (10, 8, 11)]
    with EpisodeIndex(plane.index_path) as index:
        index.record([(e, Provenance("t", 0, i, 0.0)) for i, (e, _) in enumerate(made)])
    s3 = s3_client(plane)
    sizes = FileSizes(data_mb=0, video_mb=0, chunks_size=2)  # every episode fills a file
    report = export_lerobot(
        IndexReader(plane.index_path).query(),
        tmp_path / "dataset",
        lambda e: load_media(s3, plane, e.media)["executed_frames"],
        sizes=sizes,
    )
    root = report.out
    info = json.loads((root / "meta" / "info.json").read_text())
    assert (info["chunks_size"], info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (2, 0, 0)
    where = [(0, 0), (0, 1), (1, 0)]  # the third file starts chunk 1
    assert sorted(p.relative_to(root).as_posix() for p in (root / "data").rglob("*.parquet")) == [
        info["data_path"].format(chunk_index=c, file_index=f) for c, f in where
    ]
    episodes = pq.read_table(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    for row, (episode, _), (chunk, file) in zip(episodes, made, where, strict=True):
        n = len(episode.actions)
        assert (row["data/chunk_index"], row["data/file_index"]) == (chunk, file)
        assert (row[f"videos/{VIDEO_KEY}/chunk_index"], row[f"videos/{VIDEO_KEY}/file_index"]) == (chunk, file)
        assert row[f"videos/{VIDEO_KEY}/from_timestamp"] == 0  # each episode starts its own video
        steps = pq.read_table(root / info["data_path"].format(chunk_index=chunk, file_index=file)).to_pydict()
        assert steps["index"] == list(range(row["dataset_from_index"], row["dataset_to_index"]))
        assert np.allclose(steps["action"], np.asarray(episode.actions, np.float32))
        video = root / info["video_path"].format(video_key=VIDEO_KEY, chunk_index=chunk, file_index=file)
        assert len(_frames(video)) == n
    clips = import_lerobot(root)
    assert [len(c.frames) for c in clips] == [len(e.actions) for e, _ in made]
    for clip, (_, frames) in zip(clips, made, strict=True):
        assert np.abs(clip.frames.astype(int) - frames[: len(clip.frames)].astype(int)).mean() < 4


def test_a_dataset_of_another_format_version_is_refused_with_how_to_convert_it(tmp_path):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v2.1", "features": {}}))
    with pytest.raises(UsageError, match="LeRobot v2.1 dataset; this reads v3.0") as e:
        import_lerobot(tmp_path)
    assert "convert" in e.value.hint
