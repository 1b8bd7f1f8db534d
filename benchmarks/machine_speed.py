"""How fast this machine's cores are at the moment: one fixed piece of work, timed.

On a shared virtual machine the same code runs at different speeds from one hour to the next (a
neighbour's load, the host's CPU frequency), and a bench's figures move with it. Timing the same work
before and after a run says which figures were taken on the same machine."""

from __future__ import annotations

import hashlib
import statistics
import time
import zlib

import numpy as np


def _camera_like_bytes() -> bytes:
    return np.random.default_rng(0).normal(128, 20, 4_000_000).clip(0, 255).astype(np.uint8).tobytes()


def reference_ms(repeats: int = 5) -> float:
    """Median wall-clock milliseconds, on one core, of sha256 and zlib over 4 MB of noisy bytes:
    lower is a faster machine. Wall clock, not CPU time, so that time the host gave to another
    guest counts too."""
    # Both halves resemble the data plane's work: the media's sha256, and a byte-oriented
    # compressor over camera-like bytes.
    data = _camera_like_bytes()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        hashlib.sha256(data).digest()
        zlib.compress(data, 1)
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 1)
