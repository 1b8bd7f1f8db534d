"""How an episode's media travel: its arrays in one NumPy ``.npz``, compressed with zstd.

Camera frames may instead be stored as H.264 (`video`): the member ``NAME.h264`` holds the
stream and ``NAME.shape`` its shape, and decoding gives back the frames under NAME. Whoever reads
an object needs no setting to know which it holds.

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
import math
import threading
import zipfile
from collections.abc import Iterable

import numpy as np
import zstandard

from infra.contracts import video

MEDIA_TYPE = "application/x-npz+zstd"
SUFFIX = ".npz.zst"
ALLOWED_DTYPES = {"uint8", "float16", "float32", "float64", "int32", "int64", "bool"}
VIDEO, SHAPE = ".h264", ".shape"


def encode(arrays: dict[str, np.ndarray], level: int = 1, video_crf: int | None = None) -> bytes:
    """With `video_crf`, every array of frames that H.264 can code travels as video at that crf
    (lossy); the others, and all of them without it, exactly."""
    members = {}
    for name, array in arrays.items():
        if array.dtype.name not in ALLOWED_DTYPES:
            raise ValueError(f"{name}: dtype {array.dtype} cannot travel; use one of {sorted(ALLOWED_DTYPES)}")
        if video_crf is not None and video.codable(array):
            stream = video.encode(array, video_crf)
            members[name + VIDEO] = np.frombuffer(stream, np.uint8)
            members[name + SHAPE] = np.array(array.shape, np.int64)
        else:
            members[name] = np.ascontiguousarray(array)
    buf = io.BytesIO()
    np.savez(buf, **members)
    return zstandard.ZstdCompressor(level=level).compress(buf.getvalue())


MAX_DECODED_BYTES = 1 << 30

# NumPy parses each array's header with `ast.literal_eval`, and CPython 3.11 keeps the AST
# constructor's recursion depth per interpreter, not per thread: parses in two threads at once can
# fail with "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905). Ingest
# decodes in a thread pool, and in CI that error dead-lettered a valid episode. Reading the
# members takes turns; decompression and video decoding do not.
_MEMBERS = threading.Lock()


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
    archive = _unpack(blob, max_bytes)
    with _MEMBERS, np.load(archive, allow_pickle=False) as npz:
        out = {name: npz[name] for name in npz.files if not name.endswith((VIDEO, SHAPE))}
        stored = {name: npz[name] for name in npz.files if name.endswith((VIDEO, SHAPE))}
    budget = max_bytes - sum(a.nbytes for a in out.values())
    for name, shape in _videos(stored, out).items():
        if math.prod(shape) > budget:  # checked before decoding: the frames are allocated at once
            raise TooLarge(f"video {name} {shape} decodes to more than {max_bytes} bytes")
        out[name] = video.decode(stored[name + VIDEO].tobytes(), shape)
        budget -= out[name].nbytes
    return out


def inspect(blob: bytes, max_bytes: int = MAX_DECODED_BYTES) -> dict[str, tuple[list[int], str]]:
    """Each array's shape and dtype: what ingest checks against the message. Arrays stored as they
    are are read from their headers alone; a video is checked against its shape by decoding
    (`video.check`), since only decoding shows that a stream holds the frames it claims."""
    out, stored = {}, {}
    archive = _unpack(blob, max_bytes)
    with _MEMBERS, zipfile.ZipFile(archive) as members:
        for member_name in members.namelist():
            name = member_name.removesuffix(".npy")
            with members.open(member_name) as member:
                if name.endswith((VIDEO, SHAPE)):  # a compressed stream and its shape: read whole
                    stored[name] = np.lib.format.read_array(member, allow_pickle=False)
                    continue
                read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(
                    np.lib.format.read_magic(member), np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(member)
            out[name] = (list(shape), dtype.name)
    for name, shape in _videos(stored, out).items():
        video.check(stored[name + VIDEO].tobytes(), shape)
        out[name] = (list(shape), "uint8")
    return out


def _videos(stored: dict[str, np.ndarray], plain: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """Each video's declared frame shape, by the name it decodes to, from the `stored` streams and
    shapes; `plain` are the names of the arrays stored as they are."""
    streams = {n.removesuffix(VIDEO) for n in stored if n.endswith(VIDEO)}
    shapes = {n.removesuffix(SHAPE) for n in stored if n.endswith(SHAPE)}
    if streams != shapes:
        raise ValueError(f"video members {sorted(streams)} and their shapes {sorted(shapes)} do not pair up")
    if twice := streams & set(plain):
        raise ValueError(f"{sorted(twice)} are stored both as arrays and as video")
    out = {}
    for name in sorted(streams):
        shape = stored[name + SHAPE]
        if shape.dtype != np.int64 or shape.ndim != 1 or (shape < 0).any():
            raise ValueError(f"video {name}'s shape {shape!r} is not a list of sizes")
        out[name] = tuple(int(s) for s in shape)
    return out


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()
