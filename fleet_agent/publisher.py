"""Publishing finished episodes: media to S3 as claim checks, then a small JSON message to Kafka.

``publish`` only encodes the arrays and appends the episode to the on-disk spool, so a robot
never waits on the network. A background shipper drains the spool in order: it uploads each
batch's media (in parallel), produces the messages (acks=all, keyed by robot_id),
and removes an entry only after Kafka has acknowledged it. A batch that holds several episodes of
one robot (a backlog) puts their media in one object, a pack, and each message names its
episode's bytes in it (`MediaRef.offset`): S3 servers spend their time per request, not per
byte. When S3 or Kafka is unreachable entries simply wait, and are replayed in order when the
service is back. A replay after a partial failure can send a message twice; the learner drops
duplicates by episode_id.

The shipper never dies: an entry no retry can ship (an unreadable spool file, a message the
broker refuses for its size) is quarantined with its reason (`Spool.quarantine`, counted in
`quarantined` and the `fleet_spool_quarantined_total` metric) and the stream goes on behind it;
any other failure is logged and retried with backoff.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from kafka import KafkaProducer
from kafka.errors import MessageSizeTooLargeError

from fleet_agent import metrics
from fleet_agent.spool import MEDIA as MEDIA_SUFFIX
from fleet_agent.spool import Spool, SpoolEntry
from infra.clients import ServiceUnavailable, kafka_producer, s3_client
from infra.contracts import arrays
from infra.contracts.episode import ArraySpec, Episode, EpisodeCore, MediaRef
from infra.settings import Settings

log = logging.getLogger(__name__)


PACK_SUFFIX = ".pack"


@dataclass(frozen=True)
class EncodedMedia:
    blob: bytes
    arrays: dict[str, ArraySpec]


@dataclass(frozen=True)
class Placement:
    """Where an entry's media went: an object, and where in it."""

    key: str
    offset: int = 0


def plan_packs(entries: list[SpoolEntry], max_bytes: int) -> list[list[SpoolEntry]]:
    """Each robot's entries, in spool order, cut into packs of at most `max_bytes` of media (an
    entry larger than that alone; 0 = every entry alone). Greedy from the oldest, so a batch that
    is shipped again after a crash packs its first entries as before."""
    packs: list[list[SpoolEntry]] = []
    open_packs: dict[str, tuple[list[SpoolEntry], int]] = {}
    for entry in entries:
        robot, size = entry.robot_id(), entry.path(MEDIA_SUFFIX).stat().st_size
        pack, used = open_packs.get(robot, (None, 0))
        if pack is None or used + size > max_bytes:
            pack, used = [], 0
            packs.append(pack)
        pack.append(entry)
        open_packs[robot] = (pack, used + size)
    return packs


def pack_key(pack: list[SpoolEntry]) -> str:
    """One entry keeps its own key. A pack is named by its members' digests, beside its first
    episode's media: a key is never written twice with different bytes, so a message that names
    it stays true whatever a restart packs next."""
    if len(pack) == 1:
        return pack[0].media_key()
    members = hashlib.sha256("".join(e.media_sha256() for e in pack).encode()).hexdigest()[:32]
    return f"{pack[0].media_key().rsplit('/', 1)[0]}/{members}{PACK_SUFFIX}"


class EpisodePublisher:
    def __init__(
        self,
        settings: Settings,
        on_acknowledged: Callable[[str], None] | None = None,
        on_quarantined: Callable[[str, str], None] | None = None,
    ):
        """From the shipper thread: `on_acknowledged(episode_id)` once Kafka has an episode,
        `on_quarantined(robot_id, reason)` when an entry is set aside."""
        self.settings = settings
        self._on_acknowledged, self._on_quarantined = on_acknowledged, on_quarantined
        self.topic = settings.kafka.episodes_topic
        self.bucket = settings.s3.episodes_bucket
        self.spool = Spool(settings.spool_dir, settings.agent.spool_max_bytes, settings.agent.spool_full_wait_s)
        self._s3 = None
        self._producer: KafkaProducer | None = None
        self._uploads = ThreadPoolExecutor(settings.agent.upload_workers, thread_name_prefix="s3-upload")
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._shipped = 0
        self.quarantined = 0
        self.objects_put = 0  # S3 objects written: fewer than episodes when backlogs were packed
        self._placed: dict[int, Placement] = {}  # spool seq -> where its media went
        self.last_error: str | None = None
        self.retries = 0  # shipments that failed and were tried again
        self._thread = threading.Thread(target=self._ship_forever, name="episode-shipper", daemon=True)
        self._thread.start()

    # -- robot-facing --------------------------------------------------------------------------
    def publish(self, core: EpisodeCore, executed_frames: np.ndarray, imagined_videos: np.ndarray) -> Episode:
        """Spool one finished episode; returns the message that will be sent (if its media ship in a
        pack, the message names the pack's key and the offset in it instead)."""
        return self.publish_encoded(core, self.encode(executed_frames, imagined_videos))

    def encode(self, executed_frames: np.ndarray, imagined_videos: np.ndarray) -> EncodedMedia:
        """The robot's share of the work: its media as the object that will go to S3."""
        agent, media = self.settings.agent, {"executed_frames": executed_frames, "imagined_videos": imagined_videos}
        crf = agent.video_crf if agent.media_codec == "h264" else None
        specs = {name: ArraySpec(shape=list(a.shape), dtype=a.dtype.name) for name, a in media.items()}
        return EncodedMedia(arrays.encode(media, agent.compression_level, crf), specs)

    def publish_encoded(self, core: EpisodeCore, media: EncodedMedia) -> Episode:
        ref = MediaRef(
            bucket=self.bucket,
            key=core.media_key(),
            sha256=arrays.sha256(media.blob),
            nbytes=len(media.blob),
            arrays=media.arrays,
        )
        # dict(core), not core.model_dump(): its nested models are already valid and are taken as
        # they are, while Episode's own checks still run (a fifth of the CPU of a full rebuild)
        episode = Episode(**dict(core), media=ref, published_at=datetime.now(UTC))
        self.spool.append(episode.model_dump_json().encode(), media.blob)
        with self._wake:
            self._wake.notify()
        return episode

    def pending(self) -> int:
        return len(self.spool)

    @property
    def shipped(self) -> int:
        return self._shipped

    def wait_drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self, drain_timeout: float = 30.0) -> bool:
        drained = self.wait_drained(drain_timeout)
        self._stop.set()
        with self._wake:
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._uploads.shutdown(wait=True)
        if self._producer:
            self._producer.close(timeout=5)
        self.spool.close()
        return drained

    # -- shipping ------------------------------------------------------------------------------
    def _ship_forever(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                entries = self._next_shipment()
                if not entries:
                    with self._wake:
                        self._wake.wait(timeout=0.5)
                    continue
                self.ship(entries)
                backoff = 0.2
                self.last_error = None
            except Exception as e:  # noqa: BLE001 - the shipper outlives every failure
                if self.last_error != str(e):
                    level = logging.WARNING if isinstance(e, ServiceUnavailable) else logging.ERROR
                    log.log(level, "episodes wait in the spool: %s", e, exc_info=not isinstance(e, ServiceUnavailable))
                self.last_error = str(e)
                self.retries += 1
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 3.0)

    def _next_shipment(self) -> list[SpoolEntry]:
        """Up to batch_size entries; a part-full shipment first waits for more until its oldest
        entry has been spooled ship_linger_ms ago (an entry from before a restart ships at once)."""
        agent = self.settings.agent
        entries = self.spool.peek(agent.batch_size)
        if entries and len(entries) < agent.batch_size:
            due = self.spool.appended_at(entries[0]) + agent.ship_linger_ms / 1000
            while len(entries) < agent.batch_size and (left := due - time.monotonic()) > 0 and not self._stop.is_set():
                with self._wake:
                    self._wake.wait(timeout=left)
                entries = self.spool.peek(agent.batch_size)
        return entries

    def ship(self, entries: list[SpoolEntry]) -> None:
        """Upload media, then produce messages, then drop acknowledged entries (in order); an entry
        that can never be shipped is quarantined and the rest go on."""
        entries = [e for e in entries if self._readable(e)]
        self._upload(entries)
        producer = self._ensure_producer()
        sent = []
        try:
            for entry in entries:
                try:
                    future = producer.send(self.topic, key=entry.robot_id().encode(), value=self._message(entry))
                except MessageSizeTooLargeError as e:  # raised before any request: no retry can help
                    self._quarantine(entry, f"the broker cannot take the message: {e}")
                    continue
                sent.append((entry, future))
            producer.flush(timeout=self.settings.kafka.bootstrap_timeout_ms / 1000 * 3)
        except Exception as e:  # noqa: BLE001 - kafka-python raises several types for one cause
            self._reset_producer()
            raise ServiceUnavailable(f"kafka at {self.settings.kafka_bootstrap} did not acknowledge: {e}") from e
        for entry, future in sent:
            if not future.succeeded():
                if isinstance(future.exception, MessageSizeTooLargeError):
                    self._quarantine(entry, f"the broker refused the message: {future.exception}")
                    continue
                self._reset_producer()
                raise ServiceUnavailable(
                    f"kafka at {self.settings.kafka_bootstrap} refused an episode: {future.exception}"
                )
            self.spool.remove(entry)
            self._placed.pop(entry.seq, None)
            self._shipped += 1
            if self._on_acknowledged:
                self._on_acknowledged(entry.episode_id())

    def _readable(self, entry: SpoolEntry) -> bool:
        try:
            if not all(isinstance(f, str) for f in (entry.robot_id(), entry.media_key(), entry.media_sha256())):
                raise TypeError("the message's robot_id, media key or sha256 is not text")
            entry.path(MEDIA_SUFFIX).stat()
        except (OSError, ValueError, KeyError, TypeError) as e:
            self._quarantine(entry, f"unreadable spool entry: {type(e).__name__}: {e}")
            return False
        return True

    def _quarantine(self, entry: SpoolEntry, reason: str) -> None:
        folder = self.spool.quarantine(entry, reason)
        self._placed.pop(entry.seq, None)
        self.quarantined += 1
        metrics.QUARANTINED.inc()
        log.error("episode %d quarantined in %s: %s", entry.seq, folder, reason)
        if self._on_quarantined:
            try:
                robot_id = entry.robot_id()
            except (ValueError, KeyError, TypeError):
                robot_id = "*"
            self._on_quarantined(robot_id, reason)

    def _upload(self, entries: list[SpoolEntry]) -> None:
        # Remembered in memory only: after a restart an entry's media are simply put again.
        todo = [e for e in entries if e.seq not in self._placed]
        if not todo:
            return
        if self._s3 is None:
            self._s3 = s3_client(self.settings)

        def put(pack: list[SpoolEntry]) -> None:
            blobs, key = [e.media() for e in pack], pack_key(pack)
            body = b"".join(blobs)
            self._s3.put_object(self.bucket, key, io.BytesIO(body), len(body), content_type=arrays.MEDIA_TYPE)
            offset = 0
            for entry, blob in zip(pack, blobs, strict=True):
                self._placed[entry.seq] = Placement(key, offset)
                offset += len(blob)

        try:
            for f in [self._uploads.submit(put, p) for p in plan_packs(todo, self.settings.agent.pack_max_bytes)]:
                f.result()
                self.objects_put += 1
        except Exception as e:  # noqa: BLE001 - any upload failure leaves entries in the spool
            raise ServiceUnavailable(f"s3 at {self.settings.s3_endpoint} did not take the media: {e}") from e

    def _message(self, entry: SpoolEntry) -> bytes:
        """The spooled message, naming where its media went when that is a pack."""
        placed = self._placed[entry.seq]
        if placed == Placement(entry.media_key()):
            return entry.message()
        media = {**entry.parsed()["media"], "key": placed.key, "offset": placed.offset}
        return json.dumps({**entry.parsed(), "media": media}, separators=(",", ":")).encode()

    def _ensure_producer(self) -> KafkaProducer:
        if self._producer is None:
            # Every shipment ends in a flush, which sends what is gathered at once: no timer needs
            # to close a batch early, and a shipment's messages for one partition travel as one
            # batch (the embedded broker writes each batch as an S3 object).
            self._producer = kafka_producer(self.settings, linger_ms=1_000)
        return self._producer

    def _reset_producer(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=1)
            self._producer = None
