"""How frames and videos travel: a NumPy ``.npy`` payload compressed with zstd.

``.npy`` with ``allow_pickle=False`` carries only dtype, shape and raw bytes, so decoding data
from a bucket that others can write never executes code. The sha256 of the compressed bytes
goes into the Kafka message (the claim check) and is verified before anything is indexed.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import zstandard

MEDIA_TYPE = "application/x-npy+zstd"
SUFFIX = ".npy.zst"
ALLOWED_DTYPES = {"uint8", "float16", "float32", "float64", "int32", "int64", "bool"}


def encode(array: np.ndarray, level: int = 3) -> bytes:
    if array.dtype.name not in ALLOWED_DTYPES:
        raise ValueError(f"dtype {array.dtype} cannot travel; use one of {sorted(ALLOWED_DTYPES)}")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return zstandard.ZstdCompressor(level=level).compress(buf.getvalue())


def decode(blob: bytes) -> np.ndarray:
    raw = zstandard.ZstdDecompressor().decompress(blob)
    return np.load(io.BytesIO(raw), allow_pickle=False)


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()
