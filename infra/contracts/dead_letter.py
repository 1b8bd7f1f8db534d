"""The dead-letter contract: why the learner refused a message, as Kafka headers beside its bytes.

A reason is one of a closed set, so that dashboards and alerts count it without parsing prose;
the detail (which object, which field) travels in its own header.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

REASON_HEADER, DETAIL_HEADER, SOURCE_HEADER, ORIGINAL_HEADER = "reason", "detail", "source", "original"


class DeadLetterReason(StrEnum):
    empty = "empty"  # a record with no value
    bad_json = "bad_json"  # the bytes are not JSON
    schema = "schema"  # JSON that is not an episode of this schema version
    media_location = "media_location"  # not the configured bucket, or a key S3 cannot name
    access_denied = "access_denied"  # S3 refused the learner the object (replay once permissions are fixed)
    missing_object = "missing_object"  # the media it names are not in S3
    checksum_mismatch = "checksum_mismatch"  # the media in S3 are not the bytes the message names
    too_large = "too_large"  # media over the learner's caps, compressed or decoded
    media_content = "media_content"  # media that do not decode, or whose arrays are not those the message declares
    unknown = "unknown"  # a record whose headers name no reason this code knows


@dataclass(frozen=True)
class DeadLetter:
    reason: DeadLetterReason
    detail: str
    original: str | None = None  # s3:// URI of the original bytes when they were too large to travel again

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"

    def headers(self, source: str) -> list[tuple[str, bytes]]:
        return [
            (REASON_HEADER, self.reason.value.encode()),
            (DETAIL_HEADER, self.detail[:2_000].encode()),
            (SOURCE_HEADER, source.encode()),
            *([(ORIGINAL_HEADER, self.original.encode())] if self.original else []),
        ]

    @classmethod
    def from_headers(cls, headers) -> DeadLetter:
        """Read back from a record's headers; a record written before the detail header had
        "reason: detail" in one header."""
        found = {k: v.decode(errors="replace") for k, v in headers or ()}
        reason, _, detail = found.get(REASON_HEADER, "unknown").partition(":")
        known = reason.strip() in DeadLetterReason._value2member_map_
        return cls(
            DeadLetterReason(reason.strip()) if known else DeadLetterReason.unknown,
            found.get(DETAIL_HEADER, detail.strip()),
            found.get(ORIGINAL_HEADER),
        )
