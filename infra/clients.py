"""The one place that builds service clients from settings.

Nothing else in the platform constructs a Kafka producer, an S3 client or an MLflow client
from raw strings, so security settings and friendly errors apply everywhere alike.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlparse

import urllib3
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError
from minio import Minio

from infra.errors import FleetError
from infra.settings import Service, Settings


class ServiceUnavailable(FleetError):
    """A platform service did not answer; the message names it and says what to check."""


def unavailable(settings: Settings, service: Service, detail: str) -> ServiceUnavailable:
    env = {
        "s3": "FLEET_S3__ENDPOINT",
        "kafka": "FLEET_KAFKA__BOOTSTRAP_SERVERS",
        "mlflow": "FLEET_MLFLOW__TRACKING_URI",
        "prefect": "FLEET_PREFECT__API_URL",
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
        "reconnect_backoff_max_ms": 1_000,
        "request_timeout_ms": 15_000,
    }
    try:
        return KafkaConsumer(*topics, **(conf | overrides))
    except KafkaTimeoutError as e:
        raise unavailable(settings, "kafka", "no broker answered") from e


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

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri)


# -- Prefect --------------------------------------------------------------------------------
def use_prefect(settings: Settings) -> None:
    """Point Prefect, which reads its own environment, at the configured API before a flow runs."""
    import os

    os.environ["PREFECT_API_URL"] = settings.prefect_api_url
