"""The canary's telemetry reader starts at the canary's start, not at offset 0: on a fleet that has
published for months, reading from the beginning would take longer than the canary itself. And it
counts every episode: one the broker makes visible after the ones behind it is waited for."""

from __future__ import annotations

import io
import json
import time
import uuid

import pytest
from kafka import TopicPartition

from infra.clients import kafka_consumer, kafka_producer, s3_client, seek_since
from infra.contracts.telemetry import EpisodeTelemetry
from registry.analysis import Arm
from registry.canary_telemetry import CLOCK_SKEW_S, CanaryTelemetry
from tests.integration.test_data_plane import hide_batch

pytestmark = pytest.mark.integration


def _episode(version: str, success: bool) -> bytes:
    t = EpisodeTelemetry(
        robot_id="r1",
        episode_id=uuid.uuid4(),
        policy_version=version,
        task_id="reach_red",
        success=success,
        decision_ms_p50=1.0,
        decision_ms_p95=1.0,
        decisions=1,
        rejections=0,
        candidates=4,
    )
    return t.model_dump_json().encode()


def test_the_canary_reader_skips_telemetry_from_before_the_canary(tracked):

    topic, producer = tracked.kafka.telemetry_topic, kafka_producer(tracked)
    an_hour_ago_ms = int((time.time() - 3600) * 1000)
    for _ in range(5):  # last hour's episodes of an older canary
        producer.send(topic, _episode("2", success=False), timestamp_ms=an_hour_ago_ms).get(timeout=30)
    since = time.time()
    for success in (True, True, False):
        producer.send(topic, _episode("2", success=success)).get(timeout=30)
    producer.close()

    reader = CanaryTelemetry(tracked, since)
    read = []
    deadline = time.monotonic() + 30
    while len(read) < 3 and time.monotonic() < deadline:
        read += reader.poll()
    time.sleep(1)
    read += reader.poll()
    reader.close()

    assert len(read) == 3 and all(r.timestamp >= (since - CLOCK_SKEW_S) * 1000 for r in read)
    # the topic's partitions interleave: the three arrive in no set order
    assert sorted(json.loads(r.value)["success"] for r in read) == [False, True, True]

    reader = CanaryTelemetry(tracked, since)  # what the analysis counts from it
    canary, champion, bad = counted_until(reader, episodes=3)
    reader.close()
    assert (canary.successes, canary.episodes, champion.episodes, bad) == (2, 3, 0, 0)


def counted_until(reader: CanaryTelemetry, episodes: int, timeout_s: float = 30) -> tuple[Arm, Arm, int]:
    """What the analysis counts for canary "2" and champion "1" once the canary has `episodes`."""
    canary, champion, bad = Arm(0, 0), Arm(0, 0), 0
    deadline = time.monotonic() + timeout_s
    while canary.episodes < episodes and time.monotonic() < deadline:
        more = reader.arms("2", "1")
        canary, champion, bad = canary + more[0], champion + more[1], bad + more[2]
    return canary, champion, bad


def test_a_canary_episode_the_broker_makes_visible_late_is_still_counted(tracked):
    """Tansu assigns a batch its offset before it writes it: a reader can be handed offsets 1 and 3
    and only later 2. A canary failure passed over that way would flatter the canary."""
    topic, producer = tracked.kafka.telemetry_topic, kafka_producer(tracked)
    since = time.time()
    sent = []
    for success in (True, True, False, True, True):  # each its own batch, all on one partition
        sent.append(producer.send(topic, _episode("2", success=success), partition=0).get(timeout=30))
    producer.close()
    late = sent[2]  # the canary's one failure
    key, blob = hide_batch(tracked, late)

    reader = CanaryTelemetry(tracked, since)
    canary, _, _ = counted_until(reader, episodes=5, timeout_s=3)
    assert (canary.successes, canary.episodes) == (2, 2)  # the two before the gap; then it waits
    s3_client(tracked).put_object(tracked.s3.kafka_bucket, key, io.BytesIO(blob), len(blob))
    more, _, _ = counted_until(reader, episodes=3)
    reader.close()
    assert (canary + more).successes == 4 and (canary + more).episodes == 5
    assert reader.skipped_offsets == 0


@pytest.mark.parametrize(
    "stamp_ms",
    [lambda i: i * 1000, lambda i: i * i * 40, lambda i: (i // 25) * 60_000 + 10 * i],
    ids=["steady", "accelerating", "in bursts"],
)
def test_a_seek_by_time_lands_on_each_partitions_first_record_at_or_after_it(plane, stamp_ms):
    topic, producer = plane.kafka.telemetry_topic, kafka_producer(plane)
    parts = [TopicPartition(topic, p) for p in range(plane.kafka.partitions)]
    an_hour_ago_ms = int((time.time() - 3600) * 1000)
    lengths = [0, 10, 57, 130][: len(parts)]  # empty, all before the time, and two of other lengths
    for tp, n in zip(parts, lengths, strict=False):
        for i in range(n):
            producer.send(topic, b"{}", partition=tp.partition, timestamp_ms=an_hour_ago_ms + stamp_ms(i))
    producer.flush(30)
    producer.close()
    between = an_hour_ago_ms + (stamp_ms(20) + stamp_ms(21)) // 2  # between each partition's 21st and 22nd record
    exactly = an_hour_ago_ms + stamp_ms(21)  # the 22nd record's own time: "at or after" includes it

    for since_ms in (between, exactly):
        consumer = kafka_consumer(plane, group_id=None)
        consumer.assign(parts)
        seek_since(plane, consumer, parts, since_ms / 1000)
        found = {tp.partition: consumer.position(tp) for tp in parts}
        consumer.close()
        assert found == {tp.partition: min(n, 21) for tp, n in zip(parts, lengths, strict=False)}, since_ms
