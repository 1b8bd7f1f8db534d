"""`fleet bench media-codecs`: bytes per episode of the robot's frames as the data plane ships them
(npy + zstd, `infra.contracts.arrays`) against H.264 (the LeRobot export's codec), with the time
to encode and decode and what the lossy codec changes, on camera-like and noise-free frames.

The data plane is bytes-bound (README: ingest), so this says what shipping video would buy
before anyone builds it."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from benchmarks import BenchResult
from infra.contracts import arrays
from learner.lerobot import H264Writer, decode_video
from sim.synthetic import render_clip


class CodecResult(BaseModel):
    codec: str
    kib_per_episode: float
    encode_ms_per_episode: float
    decode_ms_per_episode: float
    mean_abs_error: float  # grey levels, decoded against the original frames


class MediaCodecsBench(BenchResult):
    episodes: int
    frames_per_episode: int
    size: int
    raw_kib_per_episode: float
    camera_like: list[CodecResult]  # per-pixel sensor noise, std `noise` grey levels
    noise_free: list[CodecResult]  # the simulator's own renders
    noise: float


def bench_media_codecs(
    episodes: int = 20, frames: int = 60, size: int = 64, noise: float = 2.0, seed: int = 0
) -> MediaCodecsBench:
    rng = np.random.default_rng(seed)
    results = {}
    for name, std in (("camera_like", noise), ("noise_free", 0.0)):
        clips = [render_clip(rng, frames, size, std) for _ in range(episodes)]
        results[name] = [_zstd(clips)] + [_h264(clips, crf) for crf in (10, 23)]
    return MediaCodecsBench(
        episodes=episodes,
        frames_per_episode=frames,
        size=size,
        raw_kib_per_episode=round(frames * size * size * 3 / 1024, 1),
        noise=noise,
        **results,
    )


def _zstd(clips: list[np.ndarray]) -> CodecResult:
    start = time.perf_counter()
    blobs = [arrays.encode({"executed_frames": c}) for c in clips]
    encoded = time.perf_counter() - start
    start = time.perf_counter()
    back = [arrays.decode(blob, 1 << 30)["executed_frames"] for blob in blobs]
    decoded = time.perf_counter() - start
    error = float(
        np.mean([np.abs(b.astype(np.int16) - c.astype(np.int16)).mean() for b, c in zip(back, clips, strict=True)])
    )
    return _row("npy+zstd (the data plane)", clips, sum(map(len, blobs)), encoded, decoded, error)


def _h264(clips: list[np.ndarray], crf: int) -> CodecResult:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clips.mp4"
        start = time.perf_counter()
        writer = H264Writer(path, clips[0].shape[1:], crf=crf)
        for clip in clips:
            writer.add(clip)
        writer.close()
        encoded = time.perf_counter() - start
        start = time.perf_counter()
        frames = decode_video(path)
        decoded = time.perf_counter() - start
        error = float(np.abs(frames.astype(np.int16) - np.concatenate(clips).astype(np.int16)).mean())
        return _row(f"h264 crf {crf}", clips, path.stat().st_size, encoded, decoded, error)


def _row(codec: str, clips, nbytes: int, encoded: float, decoded: float, error: float) -> CodecResult:
    n = len(clips)
    return CodecResult(
        codec=codec,
        kib_per_episode=round(nbytes / n / 1024, 1),
        encode_ms_per_episode=round(encoded / n * 1000, 1),
        decode_ms_per_episode=round(decoded / n * 1000, 1),
        mean_abs_error=round(error, 2),
    )
