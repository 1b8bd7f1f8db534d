"""`fleet bench media-codecs`: bytes per episode of the robot's frames in the data plane's two
forms (`infra.contracts.arrays`): exactly, as npy + zstd, and as H.264 at two crf values
(`FLEET_AGENT__MEDIA_CODEC=h264`), with the time to encode and decode each episode's object and
what the lossy codec changes, on camera-like and noise-free frames."""

from __future__ import annotations

import time

import numpy as np
from pydantic import BaseModel

from benchmarks import BenchResult
from infra.contracts import arrays
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
    return _codec("npy+zstd (exact)", clips, None)


def _h264(clips: list[np.ndarray], crf: int) -> CodecResult:
    return _codec(f"h264 crf {crf}", clips, crf)


def _codec(name: str, clips: list[np.ndarray], crf: int | None) -> CodecResult:
    """Each clip as one episode's object, encoded and decoded the way publisher and learner do."""
    arrays.encode({"warm": clips[0][:2]}, video_crf=crf)  # the codec's one-off loading is not an episode's
    start = time.perf_counter()
    blobs = [arrays.encode({"executed_frames": c}, video_crf=crf) for c in clips]
    encoded = time.perf_counter() - start
    start = time.perf_counter()
    back = [arrays.decode(blob)["executed_frames"] for blob in blobs]
    decoded = time.perf_counter() - start
    error = float(
        np.mean([np.abs(b.astype(np.int16) - c.astype(np.int16)).mean() for b, c in zip(back, clips, strict=True)])
    )
    return _row(name, clips, sum(map(len, blobs)), encoded, decoded, error)


def _row(codec: str, clips, nbytes: int, encoded: float, decoded: float, error: float) -> CodecResult:
    n = len(clips)
    return CodecResult(
        codec=codec,
        kib_per_episode=round(nbytes / n / 1024, 1),
        encode_ms_per_episode=round(encoded / n * 1000, 1),
        decode_ms_per_episode=round(decoded / n * 1000, 1),
        mean_abs_error=round(error, 2),
    )
