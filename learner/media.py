"""Fetching an episode's claim-checked media from S3, with its sha256 checked against the message.

The ingestor uses it to judge messages, curation to read frames. Failures are told apart: an
object that is gone or corrupt can never be accepted (`Rejected`, the dead-letter reason); an S3
that does not answer is an outage (`ServiceUnavailable`), worth retrying.
"""

from __future__ import annotations

import numpy as np
from minio import Minio
from minio.error import S3Error

from infra.clients import ServiceUnavailable
from infra.contracts import arrays
from infra.contracts.dead_letter import DeadLetter, DeadLetterReason
from infra.contracts.episode import MediaRef
from infra.errors import FleetError

PERMANENT_S3_CODES = {"NoSuchKey", "NoSuchBucket", "InvalidObjectName"}


class Rejected(FleetError):
    """Media (or a message) that can never be accepted, with the dead letter that says why."""

    def __init__(self, reason: DeadLetterReason, detail: str):
        self.dead_letter = DeadLetter(reason, detail)
        super().__init__(str(self.dead_letter))


def fetch_verified(s3: Minio, endpoint: str, ref: MediaRef) -> bytes:
    try:
        response = s3.get_object(ref.bucket, ref.key)
        try:
            blob = response.read()
        finally:
            response.close()
            response.release_conn()
    except S3Error as e:
        if e.code in PERMANENT_S3_CODES:
            raise Rejected(DeadLetterReason.missing_object, f"s3://{ref.bucket}/{ref.key} ({e.code})") from e
        raise ServiceUnavailable(f"s3 at {endpoint} failed: {e.code}") from e
    except Exception as e:  # noqa: BLE001 - connection-level failures from urllib3
        raise ServiceUnavailable(f"s3 at {endpoint} did not answer: {e}") from e
    digest = arrays.sha256(blob)
    if digest != ref.sha256:
        raise Rejected(
            DeadLetterReason.checksum_mismatch,
            f"s3://{ref.bucket}/{ref.key} has sha256 {digest}, message says {ref.sha256}",
        )
    return blob


def load_media(s3: Minio, endpoint: str, ref: MediaRef) -> dict[str, np.ndarray]:
    return arrays.decode(fetch_verified(s3, endpoint, ref))
