"""The embedded stack: SeaweedFS (S3), Tansu (Kafka protocol), MLflow and Prefect on loopback.

``up`` starts each service that settings do not point elsewhere, waits until it answers, then
creates the buckets and topics; ``down`` stops only what ``up`` started.
"""

from infra.stack.lifecycle import (
    cpu_seconds,
    down,
    kill_service,
    start_service,
    start_supervisor,
    status,
    stop_service,
    supervise,
    supervise_once,
    up,
)
from infra.stack.provision import ensure_buckets, ensure_topics, topics
from infra.stack.services import StackError

__all__ = [
    "StackError",
    "cpu_seconds",
    "down",
    "ensure_buckets",
    "ensure_topics",
    "kill_service",
    "start_service",
    "start_supervisor",
    "status",
    "stop_service",
    "supervise",
    "supervise_once",
    "topics",
    "up",
]
