"""How an episode's media travel: its arrays in one NumPy ``.npz``, compressed with zstd.

One object per episode (not per array) halves the S3 requests on both sides of the data plane,
which is what bounds it when frames compress well, and halves the request bill on real S3.
``.npz`` read with ``allow_pickle=False`` carries only names, dtypes, shapes and raw bytes, so
decoding an object from a bucket that others can write never executes code. The sha256 of the
compressed bytes is the claim check in the Kafka message, verified before anything is indexed.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import zstandard

MEDIA_TYPE = "application/x-npz+zstd"
SUFFIX = ".npz.zst"
ALLOWED_DTYPES = {"uint8", "float16", "float32", "float64", "int32", "int64", "bool"}


def encode(arrays: dict[str, np.ndarray], level: int = 1) -> bytes:
    for name, array in arrays.items():
        if array.dtype.name not in ALLOWED_DTYPES:
            raise ValueError(f"{name}: dtype {array.dtype} cannot travel; use one of {sorted(ALLOWED_DTYPES)}")
    buf = io.BytesIO()
    np.savez(buf, **{name: np.ascontiguousarray(a) for name, a in arrays.items()})
    return zstandard.ZstdCompressor(level=level).compress(buf.getvalue())


def decode(blob: bytes) -> dict[str, np.ndarray]:
    raw = zstandard.ZstdDecompressor().decompress(blob)
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()
