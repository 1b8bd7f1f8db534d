"""Buckets and topics the platform needs, created on the configured services (embedded or not)."""

from __future__ import annotations

import contextlib

from infra.clients import kafka_admin, s3_client, unavailable
from infra.settings import Settings


def ensure_buckets(s: Settings) -> None:
    client = s3_client(s)
    for bucket in (s.s3.episodes_bucket, s.s3.mlflow_bucket, s.s3.kafka_bucket):
        try:
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)
        except Exception as e:  # noqa: BLE001 - re-raised with the service named
            raise unavailable(s, "s3", f"could not create bucket {bucket}: {e}") from e


def topics(s: Settings) -> list[str]:
    """The platform's four topics under `s`."""
    return [s.kafka.episodes_topic, s.kafka.dead_letter_topic, s.kafka.rollouts_topic, s.kafka.telemetry_topic]


def ensure_topics(s: Settings, extra: tuple[str, ...] = ()) -> None:
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = kafka_admin(s)
    try:
        existing = set(admin.list_topics())
        wanted = [*topics(s), *extra]
        new = [
            NewTopic(t, num_partitions=s.kafka.partitions, replication_factor=s.kafka.replication_factor)
            for t in wanted
            if t not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
    finally:
        admin.close()
