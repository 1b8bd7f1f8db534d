"""How an episode's media travel: its arrays in one NumPy ``.npz``, compressed with zstd.

Camera frames may instead be stored as H.264 (`video`): the member ``NAME.h264`` holds the
stream and ``NAME.shape`` its shape, and decoding gives back the frames under NAME. Whoever reads
an object needs no setting to know which it holds.

One object per episode (not per array) halves the S3 requests on both sides of the data plane,
which is what bounds it when frames compress well, and halves the request bill on real S3.
An ``.npz`` read by its headers' fixed pattern (`_NPY_HEADER`) carries only names, dtypes,
shapes and raw bytes, so decoding an object from a bucket that others can write never executes
code; and decoding stops at `max_bytes` of output, with the archive's members stored, not
deflated, so that a small object cannot expand into gigabytes (a decompression bomb) in the
learner or the dashboard. The sha256 of the
compressed bytes is the claim check in the Kafka message, verified before anything is indexed.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import zipfile
from collections.abc import Callable, Iterable
from typing import IO

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
            members[name] = np.require(array, requirements="C")  # as np.ascontiguousarray, but a 0-d array stays 0-d
    buf = io.BytesIO()
    np.savez(buf, **members)
    return zstandard.ZstdCompressor(level=level).compress(buf.getvalue())


MAX_DECODED_BYTES = 1 << 30

# The one header `np.save` writes (numpy/lib/format.py, `_wrap_header`), read by this pattern
# instead of NumPy's `ast.literal_eval`: a header is then parsed in microseconds, and in any number
# of threads at once (CPython 3.11's AST constructor is not thread-safe, python/cpython#106905;
# ingest reads media in a thread pool). A header written any other way is refused.
_NPY_MAGIC = b"\x93NUMPY"
_NPY_HEADER = re.compile(
    r"\{'descr': '(?P<descr>[^']{1,16})', 'fortran_order': (?P<fortran>False|True), "
    r"'shape': \((?P<shape>(?:\d+, )*(?:\d+,?)?)\), \} *\n"
)


class TooLarge(ValueError):
    pass


def _unpack(blob: bytes, max_bytes: int) -> zipfile.ZipFile:
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
    archive = zipfile.ZipFile(io.BytesIO(raw))
    if deflated := [i.filename for i in archive.infolist() if i.compress_type != zipfile.ZIP_STORED]:
        raise ValueError(f"media members {deflated} are compressed inside the archive; only stored members are read")
    # The directory's sizes are the writer's word: a member may not claim more than the archive holds.
    if overstated := [
        i.filename
        for i in archive.infolist()
        if i.file_size != i.compress_size or i.header_offset + i.compress_size > len(raw)
    ]:
        raise ValueError(f"media members {overstated} claim more bytes than the archive holds")
    return archive


def _members(
    archive: zipfile.ZipFile, read: Callable[[str], bool]
) -> dict[str, tuple[tuple[int, ...], np.dtype, np.ndarray | None]]:
    """Each member's shape and dtype from its header, and its array when `read(name)` says so. A
    member must hold the bytes its header declares (and `_unpack` bounds what it can claim by the
    archive, within the cap), so nothing is allocated beyond that, and ingest, which reads only
    headers, refuses what is short."""
    out = {}
    for info in archive.infolist():
        name = info.filename.removesuffix(".npy")
        with archive.open(info) as member:
            shape, dtype, header_bytes = _npy_header(member, name)
            declared, held = math.prod(shape) * dtype.itemsize, info.file_size - header_bytes
            if held < declared:
                raise ValueError(f"{name} holds {held} of the {declared} bytes its header declares")
            out[name] = (shape, dtype, _npy_payload(member, name, shape, dtype) if read(name) else None)
    return out


def _npy_header(member: IO[bytes], name: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and the header's length in bytes."""
    magic = member.read(8)
    if magic[:6] != _NPY_MAGIC or magic[6] not in (1, 2, 3):
        raise ValueError(f"{name} is not a .npy array")
    size_field = 2 if magic[6] == 1 else 4
    length = int.from_bytes(member.read(size_field), "little")
    header = member.read(min(length, 4096)).decode("latin1")
    if not (m := _NPY_HEADER.fullmatch(header)):
        raise ValueError(f"{name}'s header {header[:120]!r} is not one np.save writes")
    dtype = np.dtype(m["descr"])
    if dtype.hasobject:
        raise ValueError(f"{name} holds Python objects, which only pickle could read; media never need it")
    if m["fortran"] == "True":
        raise ValueError(f"{name} is stored in Fortran order; encode writes C order only")
    return tuple(int(n) for n in m["shape"].replace(",", " ").split()), dtype, 8 + size_field + length


def _npy_payload(member: IO[bytes], name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    out = np.empty(shape, dtype)
    view, got = memoryview(out.reshape(-1).view(np.uint8)), 0
    while got < out.nbytes and (n := member.readinto(view[got:])):
        got += n
    if got < out.nbytes:  # the archive's directory said more than its data holds
        raise ValueError(f"{name} ends after {got} of its {out.nbytes} bytes")
    return out


def decode(blob: bytes, max_bytes: int = MAX_DECODED_BYTES) -> dict[str, np.ndarray]:
    with _unpack(blob, max_bytes) as archive:
        members = _members(archive, read=lambda name: True)
    out = {name: a for name, (_, _, a) in members.items() if not name.endswith((VIDEO, SHAPE))}
    stored = {name: a for name, (_, _, a) in members.items() if name.endswith((VIDEO, SHAPE))}
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
    with _unpack(blob, max_bytes) as archive:
        members = _members(archive, read=lambda name: name.endswith((VIDEO, SHAPE)))
    out = {name: (list(shape), dtype.name) for name, (shape, dtype, a) in members.items() if a is None}
    stored = {name: a for name, (_, _, a) in members.items() if a is not None}
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
