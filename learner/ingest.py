"""Ingest: the learner's consumer of the episodes topic.

Each message is checked before it is kept: JSON, the episode schema (bounded, finite, media under
the robot's own prefix in the configured bucket), and the claim-checked object present in S3
with the sha256 the robot recorded, within the size caps, holding the arrays the message declares.
A message that fails goes, with a reason from a closed set and its original bytes, to the
dead-letter topic, and the stream goes on; an original too large to travel again is kept in S3
and the dead letter names it. Accepted episodes are written to the episode index (duplicates
dropped by episode_id) in one transaction; only once the dead letters are acknowledged and the
index committed are the Kafka offsets committed: a crash anywhere replays messages, never loses
them (a replay may dead-letter a message twice; the `source` header tells the copies apart).

A service outage is not a bad message: if S3 or Kafka fails mid-batch the batch is not judged,
the consumer goes back to its last committed offsets, and the batch is tried again when the
service answers.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.errors import KafkaError
from pydantic import ValidationError

from infra.clients import ServiceUnavailable, kafka_consumer, kafka_producer, s3_client
from infra.contracts import video
from infra.contracts.dead_letter import DeadLetter, DeadLetterReason
from infra.contracts.episode import Episode
from infra.offset_gaps import GaplessPoll, OffsetGaps
from infra.settings import Settings
from learner.episode_index import EpisodeWriter, Provenance
from learner.media import verify_object

log = logging.getLogger(__name__)
# Kafka's default message cap is 1 MiB; an original bigger than this, with its headers, is kept in
# S3 instead, so that a message the broker took once can always be dead-lettered.
INLINE_ORIGINAL_BYTES = 512 << 10


@dataclass
class IngestStats:
    received: int = 0
    indexed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    pauses: dict[str, int] = field(default_factory=dict)  # batches retried after a service error, by error

    def add(self, other: IngestStats) -> None:
        self.received += other.received
        self.indexed += other.indexed
        self.duplicates += other.duplicates
        self.dead_lettered += other.dead_lettered
        for counts, more in ((self.reasons, other.reasons), (self.pauses, other.pauses)):
            for k, v in more.items():
                counts[k] = counts.get(k, 0) + v


class EpisodeIngestor:
    def __init__(
        self,
        settings: Settings,
        index: EpisodeWriter,
        *,
        verify_media: bool = True,
    ):
        self.settings = settings
        self.index = index
        self.topic = settings.kafka.episodes_topic
        self.dead_letter_topic = settings.kafka.dead_letter_topic
        self.verify_media = verify_media
        self.consumer: KafkaConsumer = kafka_consumer(settings, group_id=settings.kafka.consumer_group)
        self._polls = GaplessPoll(self.consumer, settings.kafka.offset_gap_wait())
        self.gaps = self._polls.gaps
        self.consumer.subscribe([self.topic], listener=_ForgetOnAssignment(self.gaps))
        self._dlq = None
        self._resync = False  # set when positions may be past records that were not kept
        self._s3 = s3_client(settings)
        self._fetchers = ThreadPoolExecutor(settings.learner.fetch_workers, thread_name_prefix="s3-fetch")
        if verify_media:
            video.load_codec()

    # -- one batch -----------------------------------------------------------------------------
    def poll_once(self, timeout_ms: int = 500) -> IngestStats:
        if self._resync:
            self._seek_to_committed()
        try:
            records = self._polls.poll(timeout_ms, max_records=500, committed=self._committed)
        except KafkaError:
            # kafka-python can advance its positions past records it then fails to hand back.
            self._resync = True
            raise
        stats = IngestStats(received=len(records))
        if not records:
            return stats
        try:
            verdicts = self._judge(records)
            accepted, rejected = [], []
            now = time.time()
            for record, verdict in zip(records, verdicts, strict=True):
                if isinstance(verdict, Episode):
                    accepted.append((verdict, Provenance(record.topic, record.partition, record.offset, now)))
                else:
                    rejected.append((record, verdict))
            if rejected:
                self._dead_letter(rejected)
            stats.indexed, stats.duplicates = self.index.record(accepted)
            # Only now, with every record either indexed or dead-lettered, may Kafka forget them.
            self.consumer.commit()
        except (ServiceUnavailable, KafkaError) as e:
            # Nothing is lost by trying the batch again: what was indexed is deduplicated.
            self._resync = True
            raise ServiceUnavailable(f"ingest of {len(records)} records will be retried: {e}") from e
        for _, letter in rejected:
            stats.reasons[letter.reason.value] = stats.reasons.get(letter.reason.value, 0) + 1
        stats.dead_lettered = len(rejected)
        return stats

    def _judge(self, records) -> list[Episode | DeadLetter]:
        """For each record its episode if the message is good, else the dead letter that says why
        not. Messages that name one object (a robot's pack) are judged with one read of it."""
        verdicts = [self._parse(record) for record in records]
        if not self.verify_media:
            return verdicts
        by_object: dict[tuple[str, str], list[int]] = {}
        for i, verdict in enumerate(verdicts):
            if isinstance(verdict, Episode):
                by_object.setdefault((verdict.media.bucket, verdict.media.key), []).append(i)
        groups = list(by_object.values())
        letters = self._fetchers.map(
            lambda group: verify_object(self._s3, self.settings, [verdicts[i].media for i in group]), groups
        )
        for group, group_letters in zip(groups, letters, strict=True):
            for i, letter in zip(group, group_letters, strict=True):
                if letter is not None:
                    verdicts[i] = letter
        return verdicts

    def _parse(self, record) -> Episode | DeadLetter:
        if not record.value:
            return DeadLetter(DeadLetterReason.empty, "the record has no value")
        try:
            episode = Episode.model_validate_json(record.value)
        except ValidationError as e:
            bad_json = any(err["type"] == "json_invalid" for err in e.errors())
            return DeadLetter(DeadLetterReason.bad_json if bad_json else DeadLetterReason.schema, _short(e))
        if episode.media.bucket != self.settings.s3.episodes_bucket:
            return DeadLetter(DeadLetterReason.media_location, f"bucket {episode.media.bucket!r} is not the fleet's")
        return episode

    def _dead_letter(self, rejected) -> None:
        """Produce every dead letter and wait for each acknowledgement: a letter that did not arrive
        raises, so the batch's offsets are not committed and the batch is judged again."""
        if self._dlq is None:
            self._dlq = kafka_producer(self.settings)
        futures = []
        for record, letter in rejected:
            log.warning("dead-lettered %s[%d]@%d: %s", record.topic, record.partition, record.offset, letter)
            source = f"{record.topic}/{record.partition}/{record.offset}"
            value = record.value or b""
            if len(value) + len(record.key or b"") > INLINE_ORIGINAL_BYTES:
                letter = dataclasses.replace(letter, original=self._keep_original(source, value))
                value = b""
            headers = letter.headers(source)
            futures.append(self._dlq.send(self.dead_letter_topic, key=record.key, value=value, headers=headers))
        self._dlq.flush(timeout=30)
        failed = [f.exception for f in futures if not f.succeeded()]
        if failed:
            raise ServiceUnavailable(f"{len(failed)} dead letters were not acknowledged: {failed[0]}")

    def _keep_original(self, source: str, value: bytes) -> str:
        key = f"dead-letters/{source}"
        try:
            self._s3.put_object(self.settings.s3.episodes_bucket, key, io.BytesIO(value), len(value))
        except Exception as e:  # noqa: BLE001 - any failure: the batch waits for S3
            raise ServiceUnavailable(f"s3 at {self.settings.s3_endpoint} did not keep a dead letter: {e}") from e
        return f"s3://{self.settings.s3.episodes_bucket}/{key}"

    def join_group(self, timeout_s: float = 120.0) -> None:
        """Wait until the consumer group gives this learner its partitions: a one-off cost, which
        benchmarks keep off their clocks. A record the joining poll fetched is not skipped: the
        positions go back to the committed offsets."""
        deadline = time.monotonic() + timeout_s
        while not self.consumer.assignment():
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"no partitions of {self.topic} were assigned in {timeout_s:.0f} s")
            self.consumer.poll(timeout_ms=200)
        self._seek_to_committed()

    def _seek_to_committed(self) -> None:
        """Go back to the last committed offsets: the first record not yet indexed or dead-lettered."""
        for tp in self.consumer.assignment() or ():
            committed = self._committed(tp)
            if committed is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, committed)
            self.gaps.reset(tp, committed)
        self._resync = False

    def _committed(self, tp) -> int | None:
        return self.consumer.committed(tp, timeout_ms=self.settings.kafka.bootstrap_timeout_ms)

    # -- the loop ------------------------------------------------------------------------------
    def run(
        self,
        *,
        stop: threading.Event | None = None,
        until_indexed: int | None = None,
        idle_timeout_s: float | None = None,
        on_batch=None,
    ) -> IngestStats:
        """Ingest until stopped, until `until_indexed` episodes, or until idle for a while."""
        total = IngestStats()
        stop = stop or threading.Event()
        last_progress = time.monotonic()
        backoff = 0.2
        while not stop.is_set():
            try:
                stats = self.poll_once()
                backoff = 0.2
            except (ServiceUnavailable, KafkaError) as e:
                log.warning("ingest paused: %s", e)
                total.pauses[type(e).__name__] = total.pauses.get(type(e).__name__, 0) + 1
                stop.wait(backoff)
                backoff = min(backoff * 2, 3.0)
                continue
            total.add(stats)
            if stats.received:
                last_progress = time.monotonic()
                if on_batch:
                    on_batch(stats, total)
            if until_indexed is not None and total.indexed >= until_indexed:
                break
            if idle_timeout_s is not None and time.monotonic() - last_progress > idle_timeout_s:
                break
        return total

    def close(self) -> None:
        self.consumer.close()
        if self._dlq:
            self._dlq.close(timeout=5)
        self._fetchers.shutdown()


class _ForgetOnAssignment(ConsumerRebalanceListener):
    """A partition this learner gets (back) is read from the group's committed offset, which may be
    past what it last saw itself: that step is not a gap."""

    def __init__(self, gaps: OffsetGaps):
        self.gaps = gaps

    def on_partitions_revoked(self, revoked) -> None:
        pass

    def on_partitions_assigned(self, assigned) -> None:
        for tp in assigned:
            self.gaps.reset(tp, None)


def _short(e: ValidationError) -> str:
    first = e.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "<root>"
    more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{loc}: {first['msg']}{more}"
