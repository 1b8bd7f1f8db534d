"""The episode data plane against real S3 and a real Kafka-protocol broker."""

from __future__ import annotations

import io
import threading
import time
import uuid

import numpy as np
import pytest
from pydantic import SecretStr

from fleet_agent.publisher import EpisodePublisher
from infra import stack
from infra.clients import kafka_producer, read_topic, s3_client
from infra.contracts import arrays
from infra.contracts.episode import Episode
from learner.episode_index import EpisodeIndex, open_index
from learner.ingest import EpisodeIngestor
from learner.media import load_media, verify_object
from sim.synthetic import EpisodeShape, episode_stream

pytestmark = pytest.mark.integration
SMALL = EpisodeShape(steps=8, size=32, candidates=4, imagined_frames=4)


class BackgroundIngest:
    """The learner's ingest loop on a thread, as it runs beside a live fleet."""

    def __init__(self, settings):
        self.index = open_index(settings)
        self.ingestor = EpisodeIngestor(settings, self.index)
        self.stop = threading.Event()
        self.stats = self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.stats = self.ingestor.run(stop=self.stop)
        except BaseException as e:  # surfaced by wait_for in the test's own thread
            self.error = e

    def wait_for(self, n: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.index.count() < n and time.monotonic() < deadline:
            if self.error:
                raise AssertionError("the ingest loop died") from self.error
            time.sleep(0.2)
        return self.index.count()

    def close(self):
        self.stop.set()
        self.thread.join(30)
        self.ingestor.close()


def publish(publisher: EpisodePublisher, stream) -> list[str]:
    return [str(publisher.publish(*episode).episode_id) for episode in stream]


def test_thousand_episodes_arrive_once_each(plane):
    ingest = BackgroundIngest(plane)
    publisher = EpisodePublisher(plane)
    sent = publish(publisher, episode_stream(seed=1, episodes=1000, robots=20))
    assert publisher.close(drain_timeout=180), publisher.last_error
    assert ingest.wait_for(1000, timeout=180) == 1000
    ingest.close()
    indexed = ingest.index.episode_ids()
    assert sorted(indexed) == sorted(sent)


def test_frames_sent_as_h264_arrive_as_frames_close_to_the_robots(plane):
    plane = plane.model_copy(update={"agent": plane.agent.model_copy(update={"media_codec": "h264"})})
    stream = list(episode_stream(seed=5, episodes=20, robots=2))  # camera-like frames, 64x64
    ingest = BackgroundIngest(plane)
    publisher = EpisodePublisher(plane)
    sent = [publisher.publish(*episode) for episode in stream]
    assert publisher.close(drain_timeout=60), publisher.last_error
    assert ingest.wait_for(20, timeout=60) == 20
    ingest.close()
    assert sorted(ingest.index.episode_ids()) == sorted(str(e.episode_id) for e in sent)
    # as the learner indexed it: its media may have shipped in its robot's pack
    (_, frames, imagined), [episode] = stream[0], ingest.index.by_ids([str(sent[0].episode_id)])
    exact = arrays.encode({"executed_frames": frames, "imagined_videos": imagined})
    assert episode.media.nbytes * 5 < len(exact)
    media = load_media(s3_client(plane), plane, episode.media)
    for name, sent_frames in (("executed_frames", frames), ("imagined_videos", imagined)):
        assert media[name].shape == sent_frames.shape
        assert np.abs(media[name].astype(int) - sent_frames).mean() < 4


def test_broker_killed_with_sigkill_mid_stream_loses_nothing(plane):
    ingest = BackgroundIngest(plane)
    publisher = EpisodePublisher(plane)
    stream = list(episode_stream(seed=2, episodes=1000, robots=20))
    sent = publish(publisher, stream[:400])
    while publisher.shipped < 200:  # the broker dies while episodes are in flight
        time.sleep(0.05)
    stack.kill_service(plane, "kafka")
    sent += publish(publisher, stream[400:700])  # robots keep working while it is down
    time.sleep(1)
    stack.start_service(plane, "kafka")
    sent += publish(publisher, stream[700:])
    assert publisher.close(drain_timeout=240), publisher.last_error
    assert ingest.wait_for(1000, timeout=240) == 1000, lost_where(plane, set(sent) - set(ingest.index.episode_ids()))
    time.sleep(2)  # any late redelivery would show up as an extra row now
    ingest.close()
    indexed = ingest.index.episode_ids()
    assert len(indexed) == len(set(indexed)) == 1000, lost_where(plane, set(sent) - set(indexed))
    assert set(indexed) == set(sent)


def topic_records(settings, topic: str) -> list:
    """Every record on a topic, read from the beginning outside any consumer group."""
    return list(read_topic(settings, topic))


def publisher_message(settings, episode_id: str) -> bytes:
    """The message that reached Kafka for one episode (read back from the topic)."""
    for record in topic_records(settings, settings.kafka.episodes_topic):
        if episode_id.encode() in record.value:
            return record.value
    raise AssertionError(f"episode {episode_id} not on the topic")


def lost_where(settings, missing: set[str]) -> str:
    """Whether episodes missing from the index ever reached the topic (every copy): producer or
    consumer side."""
    on_topic: dict[str, list[str]] = {}
    for r in topic_records(settings, settings.kafka.episodes_topic):
        on_topic.setdefault(str(Episode.model_validate_json(r.value).episode_id), []).append(
            f"{r.partition}@{r.offset}"
        )
    found = {m: on_topic[m] for m in missing if m in on_topic}
    return f"{len(missing)} missing from the index; on the topic at {found}; {len(on_topic)} distinct on the topic"


def published_one_batch_each(settings, episodes: int) -> list:
    """`episodes` episodes of one robot (one partition), each acknowledged before the next is sent,
    so that each is a batch of its own on the broker; their records as read back from the topic."""
    publisher = EpisodePublisher(settings)
    for i, episode in enumerate(episode_stream(seed=7, episodes=episodes, robots=1, shape=SMALL)):
        publisher.publish(*episode)
        while publisher.shipped <= i:
            time.sleep(0.02)
    assert publisher.close(drain_timeout=60), publisher.last_error
    records = topic_records(settings, settings.kafka.episodes_topic)
    assert len({r.partition for r in records}) == 1 and len(records) == episodes
    return records


def hide_batch(settings, record) -> tuple[str, bytes]:
    """Remove the object that holds one record's batch from the embedded broker's store, as if its
    write had not finished yet; return its key and bytes."""
    if not settings.is_embedded("kafka"):
        pytest.skip("reaches into the embedded Tansu broker's object store")
    key = f"clusters/fleet/topics/{record.topic}/partitions/{record.partition:010d}/records/{record.offset:020d}.batch"
    s3 = s3_client(settings)
    blob = s3.get_object(settings.s3.kafka_bucket, key).read()
    s3.remove_object(settings.s3.kafka_bucket, key)
    return key, blob


def test_an_episode_the_broker_makes_visible_after_the_ones_behind_it_is_still_ingested(plane):
    """Tansu assigns a batch its offset before it writes it: a fetch can return offsets 2 and 4 and
    only later 3. Seen in CI with the broker killed mid-stream (an episode at 0@317 never indexed)."""
    records = published_one_batch_each(plane, 6)
    late = records[3]
    key, blob = hide_batch(plane, late)
    ingest = BackgroundIngest(plane)
    assert ingest.wait_for(3, timeout=60) == 3  # the three before the gap
    time.sleep(1)
    assert ingest.index.count() == 3  # and the partition waits at it
    s3_client(plane).put_object(plane.s3.kafka_bucket, key, io.BytesIO(blob), len(blob))
    assert ingest.wait_for(6, timeout=60) == 6
    ingest.close()
    assert sorted(ingest.index.episode_ids()) == sorted(
        str(Episode.model_validate_json(r.value).episode_id) for r in records
    )
    assert ingest.ingestor.gaps.skipped == 0


def test_a_gap_that_never_fills_is_skipped_after_the_wait_and_counted(plane):
    """A broker killed between assigning an offset and writing its batch leaves a hole for good;
    the producer, never acknowledged, sent the episode again at another offset."""
    plane = plane.model_copy(update={"kafka": plane.kafka.model_copy(update={"offset_gap_wait_s": 1.0})})
    records = published_one_batch_each(plane, 5)
    hide_batch(plane, records[2])
    ingest = BackgroundIngest(plane)
    assert ingest.wait_for(4, timeout=60) == 4
    ingest.close()
    assert ingest.ingestor.gaps.skipped == 1


def test_a_topic_its_producers_never_leave_quiet_is_read_to_its_end(plane):
    """Telemetry gets a heartbeat every few seconds: a reader that waits for quiet never returns."""
    topic = plane.kafka.telemetry_topic
    producer = kafka_producer(plane)
    for i in range(50):
        producer.send(topic, f"before-{i}".encode())
    producer.flush()
    stop = threading.Event()

    def heartbeats():
        while not stop.wait(0.3):
            producer.send(topic, b"heartbeat")

    beating = threading.Thread(target=heartbeats, daemon=True)
    beating.start()
    read: list = []
    reader = threading.Thread(target=lambda: read.extend(r.value for r in read_topic(plane, topic)), daemon=True)
    try:
        reader.start()
        reader.join(60)
        assert not reader.is_alive(), "the read did not end while the topic kept getting messages"
    finally:
        stop.set()
        beating.join(5)
        producer.close()
    assert sorted(v for v in read if v.startswith(b"before-")) == sorted(f"before-{i}".encode() for i in range(50))


def test_with_s3_stopped_episodes_spool_on_disk_and_arrive_when_it_is_back(plane):
    publisher = EpisodePublisher(plane)
    stack.kill_service(plane, "s3")
    try:
        sent = publish(publisher, episode_stream(seed=5, episodes=30, robots=3, shape=SMALL))
        time.sleep(3)
        assert publisher.pending() == 30, "nothing can leave the robot while S3 is down"
        assert "s3" in (publisher.last_error or "")
    finally:
        stack.start_service(plane, "s3")
        stack.start_service(plane, "kafka")  # the embedded broker keeps its log in S3
    assert publisher.close(drain_timeout=120), publisher.last_error
    index = EpisodeIndex(plane.index_path)
    ingestor = EpisodeIngestor(plane, index)
    ingestor.run(until_indexed=30, idle_timeout_s=60)
    ingestor.close()
    assert sorted(index.episode_ids()) == sorted(sent)


def test_episodes_spooled_moments_apart_wait_for_each_other_and_a_lone_one_is_not_held(plane):
    lingering = plane.model_copy(update={"agent": plane.agent.model_copy(update={"ship_linger_ms": 600})})
    publisher = EpisodePublisher(lingering)
    for episode in episode_stream(seed=12, episodes=3, robots=1, shape=SMALL):
        publisher.publish(*episode)
        time.sleep(0.05)  # the shipper would catch up with each at once without its linger
    assert publisher.wait_drained(30), publisher.last_error
    assert publisher.objects_put == 1, "one shipment, one pack, not one object per episode"

    start = time.monotonic()
    publisher.publish(*next(episode_stream(seed=13, episodes=1, robots=1, shape=SMALL)))
    assert publisher.wait_drained(30), publisher.last_error
    assert 0.6 <= time.monotonic() - start < 5, "shipped once its linger ran out, not before and not never"
    assert publisher.close(drain_timeout=5)


def test_a_robots_backlog_ships_as_one_object_per_robot_and_each_episode_reads_back_as_its_own(plane):
    access, secret = plane.s3_credentials()
    unreachable = plane.s3.model_copy(
        update={"endpoint": "http://127.0.0.1:9", "access_key": SecretStr(access), "secret_key": SecretStr(secret)}
    )
    stream = list(episode_stream(seed=11, episodes=12, robots=3, shape=SMALL))
    offline = EpisodePublisher(plane.model_copy(update={"s3": unreachable}))
    sent = publish(offline, stream)
    assert not offline.close(drain_timeout=2), "S3 unreachable: the backlog stays in the spool"

    publisher = EpisodePublisher(plane)
    assert publisher.close(drain_timeout=60), publisher.last_error
    assert publisher.objects_put == 3, "one object per robot, not one per episode"

    # Two messages from outside that name a real pack with ranges it does not hold: a slice of the
    # wrong bytes, and a range far past its end. Neither may cost the pack's own episodes.
    packed = Episode.model_validate_json(publisher_message(plane, sent[0]))
    assert packed.media.key.endswith(".pack")
    hostile = [
        packed.model_copy(update={"episode_id": uuid.uuid4(), "media": packed.media.model_copy(update=change)})
        for change in ({"offset": packed.media.offset + 1}, {"offset": 1 << 39})
    ]
    producer = kafka_producer(plane)
    for episode in hostile:
        producer.send(
            plane.kafka.episodes_topic, key=episode.robot_id.encode(), value=episode.model_dump_json().encode()
        )
    producer.flush(10)
    producer.close()

    index = EpisodeIndex(plane.index_path)
    ingestor = EpisodeIngestor(plane, index)
    stats = ingestor.run(idle_timeout_s=5)
    ingestor.close()
    assert sorted(index.episode_ids()) == sorted(sent)
    assert stats.reasons == {"checksum_mismatch": 2}

    s3 = s3_client(plane)
    episodes = {str(ep.episode_id): ep for ep in index.by_ids(sent)}
    assert len({ep.media.key for ep in episodes.values()}) == 3
    # judged together, as when one poll brings them all: one letter each, the pack's own all good,
    # whether the span is read once (the slice) or each alone (the far range)
    neighbours = [ep.media for ep in episodes.values() if ep.media.key == packed.media.key]
    for episode in hostile:
        letters = verify_object(s3, plane, [*neighbours, episode.media])
        assert [letter and letter.reason.value for letter in letters] == [None] * 4 + ["checksum_mismatch"]
    for episode_id, (_, frames, imagined) in zip(sent, stream, strict=True):
        media = load_media(s3, plane, episodes[episode_id].media)
        assert np.array_equal(media["executed_frames"], frames) and np.array_equal(media["imagined_videos"], imagined)
