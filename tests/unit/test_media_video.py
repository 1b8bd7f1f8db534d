"""Frames that travel as H.264: close to what was sent, much smaller than zstd on a camera's noisy
frames, and read only when the stream holds exactly the frames the object declares."""

import io

import numpy as np
import pytest
import zstandard

from infra.contracts import arrays, video
from sim.synthetic import render_clip


def camera_media(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "executed_frames": render_clip(rng, 16, 64, noise=2.0),
        "imagined_videos": np.stack([render_clip(rng, 4, 64, noise=2.0) for _ in range(3)])[None],
        "actions": rng.normal(size=(16, 4)).astype(np.float32),
    }


def repack(blob: bytes, **changes) -> bytes:
    """An object as a robot could write it by hand: the same members, some replaced."""
    with np.load(io.BytesIO(zstandard.ZstdDecompressor().decompress(blob)), allow_pickle=False) as npz:
        members = {name: npz[name] for name in npz.files}
    members.update(changes)
    buf = io.BytesIO()
    np.savez(buf, **{k: v for k, v in members.items() if v is not None})
    return zstandard.ZstdCompressor().compress(buf.getvalue())


def test_frames_come_back_close_and_far_smaller_than_exact():
    media = camera_media()
    exact, as_video = arrays.encode(media), arrays.encode(media, video_crf=video.DEFAULT_CRF)
    decoded = arrays.decode(as_video)
    assert {k: (v.shape, v.dtype) for k, v in decoded.items()} == {k: (v.shape, v.dtype) for k, v in media.items()}
    assert np.array_equal(decoded["actions"], media["actions"])  # not frames: exact
    for name in ("executed_frames", "imagined_videos"):
        error = np.abs(decoded[name].astype(int) - media[name]).mean()
        assert error < 4, f"{name}: mean error {error:.2f} grey levels"
    assert len(as_video) * 5 < len(exact)
    assert arrays.inspect(as_video) == arrays.inspect(exact)


def test_only_frames_h264_can_code_go_as_video():
    odd = np.zeros((2, 7, 8, 3), np.uint8)
    none = np.zeros((0, 8, 8, 3), np.uint8)
    decoded = arrays.decode(arrays.encode({"odd": odd, "none": none}, video_crf=23))
    assert np.array_equal(decoded["odd"], odd) and decoded["none"].shape == none.shape


def broken_keyframe(stream: bytes) -> bytes:
    """The stream with its first keyframe's slice data zeroed, its NAL header kept."""
    idr = next(unit for kind, _, unit in video._nal_units(stream) if kind == video.IDR_SLICE)
    at = stream.index(idr)
    return stream[: at + 2] + bytes(len(idr) - 2) + stream[at + len(idr) :]


def tampering(change: str) -> dict:
    frames = camera_media(1)["executed_frames"]
    stream = lambda f: np.frombuffer(video.encode(f), np.uint8)  # noqa: E731
    return {
        "fewer frames": {"executed_frames.h264": stream(frames[:2])},
        "more frames": {"executed_frames.h264": stream(np.concatenate([frames, frames[:1]]))},
        "other size": {"executed_frames.h264": stream(frames[:, :32, :32])},
        "size changes midway": {
            "executed_frames.h264": np.concatenate([stream(frames[:15]), stream(frames[:1, :32, :32])])
        },
        "broken keyframe": {"executed_frames.h264": np.frombuffer(broken_keyframe(video.encode(frames)), np.uint8)},
        "not a stream": {"executed_frames.h264": np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8)},
        "shape without stream": {"executed_frames.h264": None},
        "negative shape": {"executed_frames.shape": np.array([-16, 64, 64, 3])},
        "stored twice": {"executed_frames": frames},
    }[change]


@pytest.mark.parametrize(
    "change, error",
    [
        ("fewer frames", "2 frames, 16 declared"),
        ("more frames", "more than the 16 frames|17 frames, 16 declared"),
        ("other size", "32x32, declared 64x64"),
        ("size changes midway", "32x32, declared 64x64"),
        ("broken keyframe", "FFmpeg|keyframes do not decode"),
        ("not a stream", "frames, 16 declared|FFmpeg|no keyframe"),
        ("shape without stream", "do not pair up"),
        ("negative shape", "not a list of sizes"),
        ("stored twice", "both as arrays and as video"),
    ],
)
def test_a_stream_that_is_not_what_it_declares_is_refused(change, error):
    tampered = repack(arrays.encode(camera_media(), video_crf=23), **tampering(change))
    for read in (arrays.decode, arrays.inspect):
        with pytest.raises(ValueError, match=error):
            read(tampered)


def test_a_video_is_not_decoded_past_the_cap():
    blob = arrays.encode(camera_media(), video_crf=23)
    big = repack(blob, **{"executed_frames.shape": np.array([4096, 64, 64, 3])})  # 48 MiB declared
    with pytest.raises(arrays.TooLarge):
        arrays.decode(big, max_bytes=16 << 20)
