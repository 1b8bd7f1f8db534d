"""Judging an episode's media: an interpreter error in a decoder is not the media's fault."""

import numpy as np
import pytest

from infra.contracts import arrays
from infra.contracts.dead_letter import DeadLetterReason
from infra.contracts.episode import ArraySpec, MediaRef
from learner import media as learner_media

CAP = 64 << 20


def _media_and_ref():
    rng = np.random.default_rng(0)
    media = {
        "executed_frames": rng.integers(0, 255, (5, 16, 16, 3), dtype=np.uint8),
        "imagined_videos": rng.integers(0, 255, (2, 2, 3, 16, 16, 3), dtype=np.uint8),
    }
    blob = arrays.encode(media)
    ref = MediaRef(
        bucket="episodes",
        key="episodes/robot-000/2026-12-01/e.npz.zst",
        sha256=arrays.sha256(blob),
        nbytes=len(blob),
        arrays={k: ArraySpec(shape=list(v.shape), dtype=v.dtype.name) for k, v in media.items()},
    )
    return blob, ref


def _failing(times: int, monkeypatch):
    """`arrays.inspect` raising the SystemError of CPython's thread race `times` times, then reading."""
    real, calls = arrays.inspect, []

    def inspect(blob, cap):
        calls.append(1)
        if len(calls) <= times:
            raise SystemError("AST constructor recursion depth mismatch (before=39, after=37)")
        return real(blob, cap)

    monkeypatch.setattr(arrays, "inspect", inspect)
    return calls


def test_media_that_meet_an_interpreter_error_once_are_decoded_again_and_accepted(monkeypatch):
    blob, ref = _media_and_ref()
    calls = _failing(1, monkeypatch)
    learner_media.check_content(blob, ref, CAP)
    assert len(calls) == 2


def test_media_that_fail_to_decode_twice_are_judged_bad(monkeypatch):
    blob, ref = _media_and_ref()
    _failing(2, monkeypatch)
    with pytest.raises(learner_media.Rejected) as e:
        learner_media.check_content(blob, ref, CAP)
    assert e.value.dead_letter.reason == DeadLetterReason.media_content
