"""Camera frames as H.264, the way robot-learning datasets store them.

A real camera's sensor noise leaves about three quarters of a frame's bytes after zstd; a video
codec spends bits on what moves and drops the noise, for about 20x fewer bytes (README, "Frames
as video"). Frames are coded in yuv420p, so they come back close to, not equal to, what was
sent: the crf sets how close. Encoding and decoding run in this process through PyAV's bundled
FFmpeg (libx264 to write, FFmpeg's own h264 decoder to read), one thread each: the frames are
small, and the data plane runs many episodes side by side.

The stream is a raw Annex B bitstream with no container: the message already says how many
frames of what size it holds, and decoding checks the stream against that, frame by frame,
stopping at the first frame of another size and at one frame more than declared, so that no
stream can make the reader allocate more than the message declared.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction

import numpy as np

DEFAULT_CRF = 23  # x264's own default: 2-3 grey levels of mean error on camera-like 64x64 frames
FPS = 10  # the tabletop's control rate; only the encoder's rate control reads it


def codable(frames: np.ndarray) -> bool:
    """Whether `frames` (..., H, W, 3) can go through H.264: uint8 RGB, even sides (yuv420p halves
    the chroma), and at least one frame."""
    return (
        frames.dtype == np.uint8
        and frames.ndim >= 4
        and frames.shape[-1] == 3
        and frames.size > 0
        and frames.shape[-3] % 2 == 0
        and frames.shape[-2] % 2 == 0
    )


def load_codec() -> None:
    """Load FFmpeg now (about 0.15 s, once per process): a service that checks video at every
    message pays it at start rather than inside its first batch."""
    import av  # noqa: F401


def encode(frames: np.ndarray, crf: int = DEFAULT_CRF) -> bytes:
    """uint8 (..., H, W, 3) -> one H.264 stream of all its frames, in C order."""
    if not codable(frames):
        raise ValueError(f"frames {frames.shape} {frames.dtype} are not uint8 RGB with even sides")
    import av  # here, not at the top: 70 ms that every contract import would pay

    h, w = frames.shape[-3:-1]
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = w, h, "yuv420p"
    codec.time_base, codec.framerate = Fraction(1, FPS), FPS
    # ultrafast: 3x faster than veryfast on these frames for about the same size; zerolatency:
    # no lookahead buffer, so memory does not grow with the clip
    codec.options = {"crf": str(crf), "preset": "ultrafast", "tune": "zerolatency", "threads": "1"}
    out = bytearray()
    for i, frame in enumerate(frames.reshape(-1, h, w, 3)):
        picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
        picture.pts = i
        for packet in codec.encode(picture):
            out += bytes(packet)
    for packet in codec.encode(None):
        out += bytes(packet)
    return bytes(out)


def decode(stream: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """The stream's frames as uint8 `shape` (..., H, W, 3); ValueError if it holds other frames."""
    from av.video.reformatter import VideoReformatter

    n, h, w = _frames(shape)
    out = np.empty((n, h, w, 3), np.uint8)
    to_rgb = VideoReformatter()
    for i, picture in enumerate(_pictures(stream, n, h, w)):
        out[i] = to_rgb.reformat(picture, format="rgb24").to_ndarray()
    return out.reshape(shape)


def check(stream: bytes, shape: tuple[int, ...]) -> None:
    """What ingest checks, at a fraction of a full decode's cost: the stream holds exactly `shape`'s
    number of pictures, and every keyframe decodes at the declared size (a stream can change size
    only at a keyframe). Pictures are counted from the NAL unit headers alone, and only the
    parameter sets and keyframes go through the decoder. A frame between keyframes that does not
    decode is found when the frames are read (`decode`), where curation skips the episode and
    counts it."""
    n, h, w = _frames(shape)
    units = _nal_units(stream)
    pictures = sum(1 for kind, first, _ in units if kind in (SLICE, IDR_SLICE) and first)
    if pictures != n:
        raise ValueError(f"the stream holds {pictures} frames, {n} declared")
    keyframes = sum(1 for kind, first, _ in units if kind == IDR_SLICE and first)
    if not keyframes:
        raise ValueError("the stream has no keyframe to start from")
    decodable = b"".join(START + unit for kind, _, unit in units if kind in (SPS, PPS, IDR_SLICE))
    if (decoded := sum(1 for _ in _pictures(decodable, None, h, w))) != keyframes:
        raise ValueError(f"{keyframes - decoded} of the stream's {keyframes} keyframes do not decode")


# NAL unit types of H.264 (ITU-T H.264, table 7-1) that the check reads
SLICE, IDR_SLICE, SPS, PPS = 1, 5, 7, 8
START = b"\x00\x00\x01"


def _nal_units(stream: bytes) -> list[tuple[int, bool, bytes]]:
    """The stream's NAL units as (type, starts a picture, bytes after the start code). A slice
    starts a picture when its first macroblock is 0: first_mb_in_slice is the slice header's first
    field, coded Exp-Golomb, where 0 is the single bit 1."""
    b = np.frombuffer(stream, np.uint8)
    starts = (np.flatnonzero((b[:-3] == 0) & (b[1:-2] == 0) & (b[2:-1] == 1)) + 3).tolist()
    ends = [s - 3 for s in starts[1:]] + [len(b)] * bool(starts)
    units = []
    for start, end in zip(starts, ends, strict=True):
        unit = stream[start:end]
        units.append((unit[0] & 0x1F, len(unit) > 1 and bool(unit[1] & 0x80), unit))
    return units


def _frames(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) < 4 or shape[-1] != 3:
        raise ValueError(f"a video decodes to (..., H, W, 3), not {shape}")
    return math.prod(shape[:-3]), shape[-3], shape[-2]


def _pictures(stream: bytes, n: int | None, h: int, w: int) -> Iterator:
    """Decode `stream` picture by picture, refusing one of another size than h x w and, when `n`
    is given, one more than n or fewer."""
    import av

    codec = av.CodecContext.create("h264", "r")
    codec.thread_count, codec.thread_type = 1, "NONE"  # frame threads cost more than they save here
    done = 0
    try:
        for packet in [*codec.parse(stream), *codec.parse(None), None]:
            for picture in codec.decode(packet):
                if (picture.height, picture.width) != (h, w):
                    raise ValueError(f"frame {done} is {picture.width}x{picture.height}, declared {w}x{h}")
                if n is not None and done == n:
                    raise ValueError(f"the stream holds more than the {n} frames declared")
                done += 1
                yield picture
    except av.FFmpegError as e:
        raise ValueError(f"not an H.264 stream FFmpeg can decode: {e}") from e
    if n is not None and done != n:
        raise ValueError(f"the stream holds {done} frames, {n} declared")
