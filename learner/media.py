"""Fetching an episode's claim-checked media from S3, with its sha256 checked against the message.

The ingestor uses it to judge messages, curation to read frames. Failures are told apart: an
object that is gone, corrupt, too large, not what the message declares, or that S3 refuses to
name or to hand over can never be accepted as it is (`Rejected`, the dead-letter reason); an S3
that does not answer, or answers with a server error, is an outage (`ServiceUnavailable`), worth
retrying. Reads are bounded: never more than the message's `nbytes` at its `offset` (and the
configured cap) are read, and decoding stops at the decoded cap. Ingest judges the messages that
name one packed object together, with one read (`verify_object`).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
from minio import Minio
from minio.error import S3Error

from infra.clients import ServiceUnavailable
from infra.contracts import arrays
from infra.contracts.dead_letter import DeadLetter, DeadLetterReason
from infra.contracts.episode import MediaRef
from infra.errors import FleetError
from infra.settings import Settings

PERMANENT_S3_CODES = {
    "NoSuchKey": DeadLetterReason.missing_object,
    "NoSuchBucket": DeadLetterReason.missing_object,
    "InvalidObjectName": DeadLetterReason.media_location,
    "InvalidBucketName": DeadLetterReason.media_location,
    "AccessDenied": DeadLetterReason.access_denied,
    "InvalidRange": DeadLetterReason.checksum_mismatch,  # an empty object
}


class Rejected(FleetError):
    """Media (or a message) that can never be accepted, with the dead letter that says why."""

    def __init__(self, reason: DeadLetterReason, detail: str):
        self.dead_letter = DeadLetter(reason, detail)
        super().__init__(str(self.dead_letter))


def fetch_verified(s3: Minio, settings: Settings, ref: MediaRef) -> bytes:
    """The episode's bytes, read alone: no more than `nbytes`, checked against its sha256."""
    _within_cap(ref, settings.learner.max_media_bytes)
    return _verified(_read(s3, settings, ref.bucket, ref.key, ref.offset, ref.nbytes, ref.uri), ref)


def verify_object(s3: Minio, settings: Settings, refs: list[MediaRef]) -> list[DeadLetter | None]:
    """Judge the media of several messages that name one object (a robot's pack), reading it once
    when the span they cover is within the cap: each episode's letter, or None for good media.
    Each is judged on its own bytes, so a message that names a pack with a range it does not
    hold fails alone; and ranges far apart cannot make one read pass the cap: each is then read
    alone."""
    cap = settings.learner.max_media_bytes
    start, end = min(r.offset for r in refs), max(r.end for r in refs)
    if len(refs) == 1 or end - start > cap:
        return [_letter(lambda r=r: fetch_verified(s3, settings, r), r, settings) for r in refs]
    try:
        span = _read(
            s3, settings, refs[0].bucket, refs[0].key, start, end - start, f"s3://{refs[0].bucket}/{refs[0].key}"
        )
    except Rejected as e:
        return [e.dead_letter] * len(refs)
    return [_letter(lambda r=r: _verified(span[r.offset - start : r.end - start], r), r, settings) for r in refs]


def _letter(fetch, ref: MediaRef, settings: Settings) -> DeadLetter | None:
    try:
        check_content(fetch(), ref, settings.learner.max_decoded_bytes)
    except Rejected as e:
        return e.dead_letter
    return None


def _within_cap(ref: MediaRef, max_bytes: int) -> None:
    if ref.nbytes > max_bytes:
        raise Rejected(DeadLetterReason.too_large, f"{ref.uri} is {ref.nbytes} bytes, the cap is {max_bytes}")


def _read(s3: Minio, settings: Settings, bucket: str, key: str, offset: int, length: int, where: str) -> bytes:
    """A ranged read: never more than `length` bytes (at least one: minio reads a whole object when
    asked for none)."""
    try:
        response = s3.get_object(bucket, key, offset=offset, length=max(length, 1))
        try:
            return response.read()[:length]
        finally:
            response.close()
            response.release_conn()
    except S3Error as e:
        if e.code in PERMANENT_S3_CODES:
            raise Rejected(PERMANENT_S3_CODES[e.code], f"{where} ({e.code})") from e
        raise ServiceUnavailable(f"s3 at {settings.s3_endpoint} failed: {e.code}") from e
    except ValueError as e:  # minio's own check of bucket and key names, before any request
        raise Rejected(DeadLetterReason.media_location, f"{where}: {e}") from e
    except Exception as e:  # noqa: BLE001 - connection-level failures from urllib3
        raise ServiceUnavailable(f"s3 at {settings.s3_endpoint} did not answer: {e}") from e


def _verified(blob: bytes, ref: MediaRef) -> bytes:
    digest = arrays.sha256(blob)
    if digest != ref.sha256 or len(blob) < ref.nbytes:
        short = f" ({len(blob)} of the {ref.nbytes} bytes declared)" if len(blob) < ref.nbytes else ""
        raise Rejected(
            DeadLetterReason.checksum_mismatch, f"{ref.uri} has sha256 {digest}{short}, message says {ref.sha256}"
        )
    return blob


def check_content(blob: bytes, ref: MediaRef, max_decoded_bytes: int) -> None:
    """The arrays decode within the cap and are those the message declares, shape and dtype: read
    from their headers alone, as ingest needs no more."""
    with _decoding(ref, max_decoded_bytes):
        _match(ref, arrays.inspect(blob, max_decoded_bytes))


def load_media(s3: Minio, settings: Settings, ref: MediaRef) -> dict[str, np.ndarray]:
    """The media, checked as ingest checks them, decompressed once."""
    blob, cap = fetch_verified(s3, settings, ref), settings.learner.max_decoded_bytes
    with _decoding(ref, cap):
        media = arrays.decode(blob, cap)
    _match(ref, {name: (list(a.shape), a.dtype.name) for name, a in media.items()})
    return media


@contextmanager
def _decoding(ref: MediaRef, max_decoded_bytes: int):
    if ref.decoded_nbytes > max_decoded_bytes:
        raise Rejected(DeadLetterReason.too_large, f"{ref.uri} declares {ref.decoded_nbytes} decoded bytes")
    try:
        yield
    except arrays.TooLarge as e:
        raise Rejected(DeadLetterReason.too_large, f"{ref.uri}: {e}") from e
    except Exception as e:  # noqa: BLE001 - zstd, zip and npy each raise their own
        raise Rejected(DeadLetterReason.media_content, f"{ref.uri} does not decode: {e}") from e


def _match(ref: MediaRef, found: dict[str, tuple[list[int], str]]) -> None:
    declared = {name: (spec.shape, spec.dtype) for name, spec in ref.arrays.items()}
    if found != declared:
        raise Rejected(DeadLetterReason.media_content, f"{ref.uri} holds {found}, the message declares {declared}")
