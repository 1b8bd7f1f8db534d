"""Reading an episode's media: NumPy's own headers are read as NumPy reads them, any other header is
refused, and readers in many threads at once never fail (CPython 3.11's parser would)."""

import io
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import zstandard

from infra.contracts import arrays
from infra.contracts.dead_letter import DeadLetterReason
from infra.contracts.episode import ArraySpec, MediaRef
from learner import media as learner_media

CAP = 64 << 20


def _archive(members: dict[str, bytes]) -> bytes:
    """Media whose members are written byte for byte, as an attacker could."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name + ".npy", data)
    return zstandard.ZstdCompressor().compress(buf.getvalue())


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _npy_written_by_hand(header: str) -> bytes:
    """A .npy member with `header` as written, padded as np.save pads, and 8 bytes of data."""
    padded = header + " " * (63 - len(header) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(padded).to_bytes(2, "little") + padded.encode() + b"\x00" * 8


def _ref(blob: bytes, media: dict[str, np.ndarray]) -> MediaRef:
    return MediaRef(
        bucket="episodes",
        key="episodes/robot-000/2026-12-01/e.npz.zst",
        sha256=arrays.sha256(blob),
        nbytes=len(blob),
        arrays={k: ArraySpec(shape=list(v.shape), dtype=v.dtype.name) for k, v in media.items()},
    )


@pytest.mark.parametrize("dtype", sorted(arrays.ALLOWED_DTYPES))
@pytest.mark.parametrize("shape", [(), (0,), (7,), (2, 3), (1, 2, 3, 4, 5, 3)])
def test_every_array_np_save_writes_reads_back_exactly(dtype, shape):
    array = (np.arange(int(np.prod(shape))) % 3).astype(dtype).reshape(shape)
    blob = arrays.encode({"a": array})
    assert arrays.inspect(blob) == {"a": (list(shape), np.dtype(dtype).name)}
    back = arrays.decode(blob)["a"]
    assert back.dtype == array.dtype and back.shape == shape and np.array_equal(back, array)
    back[...] = 0  # decoded arrays are the reader's to change, as np.load's are


def test_headers_read_in_many_threads_at_once_all_succeed():
    rng = np.random.default_rng(0)
    media = {
        "executed_frames": rng.integers(0, 255, (5, 16, 16, 3), dtype=np.uint8),
        "imagined_videos": rng.integers(0, 255, (2, 2, 3, 16, 16, 3), dtype=np.uint8),
    }
    blob = arrays.encode(media)
    ref = _ref(blob, media)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: learner_media.check_content(blob, ref, CAP), range(400)))


@pytest.mark.parametrize(
    "header, why",
    [
        ("{'fortran_order': False, 'descr': '<f4', 'shape': (2,), }", "not one np.save writes"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': __import__('os'), }", "not one np.save"),
        ("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", "Fortran order"),
        ("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", "pickle"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1000,), }", "8 of the 4000 bytes"),
        # refused before anything is allocated: 4 TB declared in a member of 8 bytes
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }", "8 of the 4000000000000 bytes"),
    ],
)
def test_media_with_a_header_np_save_does_not_write_are_refused_with_why(header, why):
    member = _npy_written_by_hand(header)
    imagined = np.zeros((1, 1, 1, 8, 8, 3), np.uint8)
    blob = _archive({"executed_frames": member, "imagined_videos": _npy(imagined)})
    with pytest.raises(ValueError, match=why):
        arrays.inspect(blob)
    declared = {"executed_frames": np.zeros(2, np.float32), "imagined_videos": imagined}
    with pytest.raises(learner_media.Rejected) as e:
        learner_media.check_content(blob, _ref(blob, declared), CAP)
    assert e.value.dead_letter.reason == DeadLetterReason.media_content


def test_a_member_whose_directory_entry_overstates_its_size_is_refused_before_anything_is_allocated():
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000,), }"  # 400 MB declared
    member = _npy_written_by_hand(header)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("a.npy", member)
    raw = bytearray(buf.getvalue())
    entry = raw.index(b"PK\x01\x02")  # the central directory's entry: sizes at +20 and +24
    raw[entry + 20 : entry + 28] = (500_000_000).to_bytes(4, "little") * 2
    with pytest.raises(ValueError, match="claim more bytes than the archive holds"):
        arrays.decode(zstandard.ZstdCompressor().compress(bytes(raw)))


def test_a_member_that_is_not_an_array_is_refused():
    with pytest.raises(ValueError, match="not a .npy array"):
        arrays.decode(_archive({"a": b"PK\x03\x04 not numpy"}))
