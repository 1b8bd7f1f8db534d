"""How an episode's media travel: its arrays in one NumPy ``.npz``, compressed with zstd.

One object per episode (not per array) halves the S3 requests on both sides of the data plane,
which is what bounds it when frames compress well, and halves the request bill on real S3.
``.npz`` read with ``allow_pickle=False`` carries only names, dtypes, shapes and raw bytes, so
decoding an object from a bucket that others can write never executes code; and decoding stops at
`max_bytes` of output, with the archive's members stored, not deflated, so that a small object
cannot expand into gigabytes (a decompression bomb) in the learner or the dashboard. The sha256 of the
compressed bytes is the claim check in the Kafka message, verified before anything is indexed.
"""

from __future__ import annotations

import hashlib
import io
import zipfile

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


MAX_DECODED_BYTES = 1 << 30


class TooLarge(ValueError):
    pass


def _unpack(blob: bytes, max_bytes: int) -> io.BytesIO:
    declared = zstandard.frame_content_size(blob)  # -1: the frame does not say
    if declared > max_bytes:
        raise TooLarge(f"media declare {declared} decoded bytes, more than {max_bytes}")
    if declared >= 0:  # one allocation; zstd fails if the frame's output is not the declared size
        raw = zstandard.ZstdDecompressor().decompress(blob)
    else:
        raw = bytearray()
        with zstandard.ZstdDecompressor().stream_reader(blob) as reader:
            while chunk := reader.read(1 << 20):
                raw += chunk
                if len(raw) > max_bytes:
                    raise TooLarge(f"media decode to more than {max_bytes} bytes")
    archive = io.BytesIO(raw)
    with zipfile.ZipFile(archive) as members:
        deflated = [i.filename for i in members.infolist() if i.compress_type != zipfile.ZIP_STORED]
    if deflated:
        raise ValueError(f"media members {deflated} are compressed inside the archive; only stored members are read")
    return archive


def decode(blob: bytes, max_bytes: int = MAX_DECODED_BYTES) -> dict[str, np.ndarray]:
    with np.load(_unpack(blob, max_bytes), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def inspect(blob: bytes, max_bytes: int = MAX_DECODED_BYTES) -> dict[str, tuple[list[int], str]]:
    """Each array's shape and dtype, read from its header without copying its data: what ingest
    checks against the message."""
    out = {}
    with zipfile.ZipFile(_unpack(blob, max_bytes)) as members:
        for name in members.namelist():
            with members.open(name) as member:
                read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(
                    np.lib.format.read_magic(member), np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(member)
            out[name.removesuffix(".npy")] = (list(shape), dtype.name)
    return out


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()
