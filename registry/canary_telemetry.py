"""The canary analysis's view of the fleet: success per version from the telemetry topic, read
from a little before the canary started (a seek by time), never from the topic's first offset.

Kept out of the Prefect flow that uses it, so that benchmarks and tests can time and check the
same reader without importing Prefect.
"""

from __future__ import annotations

import json

from kafka import KafkaConsumer, TopicPartition

from infra.clients import kafka_consumer, seek_since
from infra.contracts.telemetry import EpisodeTelemetry
from infra.settings import Settings
from registry.analysis import Arm

CLOCK_SKEW_S = 60.0  # robots' clocks may run this far behind the learner's


def live_arms(settings: Settings, canary: str, champion: str, since: float, consumer) -> tuple[Arm, Arm, int]:
    """Success of each version on episodes finished since the canary started, from the telemetry
    topic, and the count of records that are not telemetry (skipped: one bad record must not stop
    the analysis). Episodes that straddled a model swap count for neither."""
    arms, bad = {canary: Arm(0, 0), champion: Arm(0, 0)}, 0
    for batch in consumer.poll(timeout_ms=500, max_records=5000).values():
        for record in batch:
            try:
                message = json.loads(record.value)
                if message.get("kind") != "episode":
                    continue
                t = EpisodeTelemetry.model_validate(message)
            except (TypeError, ValueError, AttributeError):  # not JSON, not an object, not the contract
                bad += 1
                continue
            if t.at.timestamp() >= since and t.policy_version in arms:
                arms[t.policy_version] += Arm(int(t.success), 1, t.rejections, t.candidates)
    return arms[canary], arms[champion], bad


def telemetry_since(settings: Settings, since: float) -> KafkaConsumer:
    """A reader of the telemetry topic from the canary's start (less a minute for robots' clocks
    that run behind the learner's): not from offset 0, which a long-lived fleet has far behind."""
    topic = settings.kafka.telemetry_topic
    consumer = kafka_consumer(settings, group_id=None)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(parts)
    seek_since(settings, consumer, parts, since - CLOCK_SKEW_S)
    return consumer
