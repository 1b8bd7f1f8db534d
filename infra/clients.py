"""The one place that builds service clients from settings.

Nothing else in the platform constructs a Kafka producer, an S3 client or an MLflow client
from raw strings, so security settings and friendly errors apply everywhere alike.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

import urllib3
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaTimeoutError
from minio import Minio

from infra import kafka_bounded_wait
from infra.errors import FleetError
from infra.settings import Service, Settings

kafka_bounded_wait.install()  # every Kafka client is built here, so every one gets the bound


class ServiceUnavailable(FleetError):
    """A platform service did not answer; the message names it and says what to check."""


def unavailable(settings: Settings, service: Service, detail: str) -> ServiceUnavailable:
    env = {
        "s3": "FLEET_S3__ENDPOINT",
        "kafka": "FLEET_KAFKA__BOOTSTRAP_SERVERS",
        "mlflow": "FLEET_MLFLOW__TRACKING_URI",
        "prefect": "FLEET_PREFECT__API_URL",
        "postgres": "FLEET_LEARNER__INDEX_URL",
    }[service]
    where = settings.endpoint(service)
    hint = (
        "is `fleet stack up` running?"
        if settings.is_embedded(service)
        else f"is the service at {where} up, and is {env} right?"
    )
    return ServiceUnavailable(f"{service} at {where} did not answer ({detail}); {hint}")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# -- Kafka ----------------------------------------------------------------------------------
def kafka_common(settings: Settings) -> dict[str, Any]:
    k = settings.kafka
    conf: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap.split(","),
        "security_protocol": k.security_protocol,
        "bootstrap_timeout_ms": k.bootstrap_timeout_ms,
    }
    if k.sasl_mechanism:
        conf["sasl_mechanism"] = k.sasl_mechanism
        conf["sasl_plain_username"] = k.sasl_username
        conf["sasl_plain_password"] = k.sasl_password.get_secret_value() if k.sasl_password else None
    if k.ssl_cafile:
        conf["ssl_cafile"] = str(k.ssl_cafile)
    return conf


def kafka_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    """A durable producer: acks from all in-sync replicas, ordered per key, idempotent where the
    broker keeps that promise (KafkaSettings.producer_is_idempotent)."""
    idempotent = settings.kafka.producer_is_idempotent()
    conf = kafka_common(settings) | {
        "acks": "all",
        "enable_idempotence": idempotent,
        # Without idempotence only one request in flight keeps a retried batch in key order.
        "max_in_flight_requests_per_connection": 5 if idempotent else 1,
        "linger_ms": 5,
        "batch_size": settings.kafka.producer_batch_bytes,
        "request_timeout_ms": 10_000,
        "delivery_timeout_ms": 30_000,
        "reconnect_backoff_max_ms": 1_000,
        "max_block_ms": 5_000,
    }
    try:
        return KafkaProducer(**(conf | overrides))
    except KafkaTimeoutError as e:
        raise unavailable(settings, "kafka", "no broker answered") from e


def kafka_consumer(settings: Settings, *topics: str, group_id: str | None, **overrides: Any) -> KafkaConsumer:
    conf = kafka_common(settings) | {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.kafka.session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka.heartbeat_interval_ms,
        "fetch_max_wait_ms": settings.kafka.fetch_wait_ms(),
        "reconnect_backoff_max_ms": 1_000,
        "request_timeout_ms": 15_000,
    }
    try:
        return KafkaConsumer(*topics, **(conf | overrides))
    except KafkaTimeoutError as e:
        raise unavailable(settings, "kafka", "no broker answered") from e


def read_topic(settings: Settings, topic: str, stall_s: float = 30.0) -> Iterator[ConsumerRecord]:
    """Every record on `topic` from its start to its end as of this call, outside any consumer group.

    Bounded by the end, not by idleness: a topic its producers keep writing (telemetry carries a
    heartbeat every few seconds per robot) is never idle for long, and a reader waiting for that
    never returns. The end of each partition is the high watermark of the first fetch response
    for it; fetch responses carry the right one on every broker, ListOffsets does not on the
    embedded one (see `seek_since`). A read that makes no progress for `stall_s` is an error
    naming the broker, never a silent short count."""
    consumer = kafka_consumer(settings, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends: dict[TopicPartition, int] = {}
        progress, last_progress = None, time.monotonic()
        while True:
            for records in consumer.poll(timeout_ms=200, max_records=5_000).values():
                yield from records
            for tp in parts:
                if tp not in ends and (highwater := consumer.highwater(tp)) is not None:
                    ends[tp] = highwater
            positions = [consumer.position(tp) for tp in parts]
            if len(ends) == len(parts) and all(at >= ends[tp] for tp, at in zip(parts, positions, strict=True)):
                return
            if positions != progress:
                progress, last_progress = positions, time.monotonic()
            elif time.monotonic() - last_progress > stall_s:
                raise unavailable(settings, "kafka", f"reading {topic} made no progress in {stall_s:.0f} s")
    finally:
        consumer.close()


def seek_since(settings: Settings, consumer: KafkaConsumer, parts: list, since_s: float) -> None:
    """Place an assigned consumer on each of `parts` at the first record stamped at or after
    `since_s` (epoch seconds), or at the end where there is none yet: a reader of the last minutes
    does not read the topic from offset 0. Where the broker cannot find offsets by time (the
    embedded one), each partition is bisected on its records' own timestamps instead: a few
    fetches per partition. Records are stamped by their producers' clocks, so callers still filter
    by the times in the records."""
    target = int(since_s * 1000)
    if settings.kafka.broker_finds_offsets_by_time():
        found = consumer.offsets_for_times(dict.fromkeys(parts, target))
        for tp in parts:
            if found.get(tp) is None:
                consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, found[tp].offset)
        return
    # Tansu's ListOffsets is no help for the end either (it answered 1 for a partition of 6), but
    # its fetch responses carry the right high watermark: bisect between the first record and it.
    # The embedded broker holds every fetch for the consumer's whole max wait (default 500 ms), so a
    # probe costs the max wait: 50 ms here (at 10 ms it answered some fetches empty, which only
    # makes the seek land early). The time is the broker's waiting, not work, so each partition is
    # bisected by a probe consumer of its own, all at once: a seek costs the longest partition's
    # probes, not their sum. (One consumer probing every partition at once landed a record early
    # where a fetch went out before its seek was answered.) The caller's consumer does no fetching
    # here, so it holds no stale prefetched records.
    with ThreadPoolExecutor(max_workers=min(len(parts), 16) or 1, thread_name_prefix="seek") as pool:
        found = dict(zip(parts, pool.map(lambda tp: _bisect_by_time(settings, tp, target), parts), strict=True))
    for tp, offset in found.items():
        consumer.seek(tp, offset)


def _bisect_by_time(settings: Settings, tp, target: int) -> int:
    """The first offset of `tp` whose record is stamped at or after `target`, or its end."""
    probe = kafka_consumer(settings, group_id=None, fetch_max_wait_ms=50)
    try:
        probe.assign([tp])
        lo = probe.beginning_offsets([tp])[tp]
        hi = probe.highwater(tp) if _timestamp_at(probe, tp, lo) is not None else lo
        while lo < hi:  # the first offset whose record is at or after the target
            mid = (lo + hi) // 2
            stamp = _timestamp_at(probe, tp, mid)
            lo, hi = (mid + 1, hi) if stamp is not None and stamp < target else (lo, mid)
        return lo
    finally:
        probe.close()


def _timestamp_at(consumer: KafkaConsumer, tp, offset: int, timeout_s: float = 2.0) -> int | None:
    """The timestamp of the record at `offset` (or the next one there is), None past the end."""
    consumer.seek(tp, offset)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        records = consumer.poll(timeout_ms=100, max_records=1).get(tp)
        if records:
            return records[0].timestamp
    return None


def kafka_admin(settings: Settings) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(**kafka_common(settings), request_timeout_ms=10_000)
    except KafkaTimeoutError as e:
        raise unavailable(settings, "kafka", "no broker answered") from e


# -- S3 -------------------------------------------------------------------------------------
def s3_client(settings: Settings) -> Minio:
    url = urlparse(settings.s3_endpoint)
    access, secret = settings.s3_credentials()
    # Short timeouts and few retries: callers keep work (spool, uncommitted offsets) and retry
    # themselves, so a stopped S3 must surface in seconds rather than minutes.
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=3, read=30),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        maxsize=max(settings.agent.upload_workers, settings.learner.fetch_workers) + 2,
        cert_reqs="CERT_REQUIRED" if url.scheme == "https" else "CERT_NONE",
    )
    return Minio(
        url.netloc,
        access_key=access,
        secret_key=secret,
        secure=url.scheme == "https",
        region=settings.s3.region,
        http_client=http,
    )


def s3_read(s3: Minio, bucket: str, key: str) -> bytes:
    """One whole object, its connection handed back to the pool."""
    response = s3.get_object(bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def s3_conditional_client(settings: Settings):
    """A boto3 S3 client, for the one thing minio's client cannot send: conditional writes
    (If-None-Match / If-Match on PUT), which S3, MinIO and SeaweedFS all honour."""
    import boto3
    from botocore.config import Config

    access, secret = settings.s3_credentials()
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name=settings.s3.region,
        config=Config(connect_timeout=3, read_timeout=30, retries={"max_attempts": 2}),
    )


def s3_env(settings: Settings) -> dict[str, str]:
    """Environment variables through which boto3-based tools (MLflow, Tansu) reach our S3."""
    access, secret = settings.s3_credentials()
    return {
        "AWS_ACCESS_KEY_ID": access,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": settings.s3.region,
        "MLFLOW_S3_ENDPOINT_URL": settings.s3_endpoint,
    }


# -- MLflow ---------------------------------------------------------------------------------
def mlflow_client(settings: Settings):
    """An MLflow client for the configured tracking server (artifacts go to S3 through it)."""
    import os

    # MLflow retries a refused connection for minutes by default; a missing server must be named
    # in seconds. Users who want more patience set these themselves.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our own commands show progress
    import mlflow
    from mlflow import MlflowClient

    if settings.mlflow.authenticated:  # MLflow's client reads its credentials from the environment
        os.environ["MLFLOW_TRACKING_USERNAME"] = settings.mlflow.username
        os.environ["MLFLOW_TRACKING_PASSWORD"] = settings.mlflow.password.get_secret_value()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri)


# -- Prefect --------------------------------------------------------------------------------
def use_prefect(settings: Settings) -> None:
    """Point Prefect, which reads its own environment, at the configured API before a flow runs."""
    import os

    os.environ["PREFECT_API_URL"] = settings.prefect_api_url
