"""Shared fixtures. Integration tests run against real services that these fixtures start."""

from __future__ import annotations

import random
import socket
import uuid
from pathlib import Path

import pytest

from infra import stack
from infra.settings import Settings


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_stack_ports() -> dict:
    """A block of free loopback ports for one embedded stack (SeaweedFS also binds port+10000)."""
    for _ in range(200):
        base = random.randrange(20000, 30000, 10)
        ports = list(range(base, base + 7))
        if all(_free(p) and _free(p + 10000) for p in ports):
            return {
                "s3_port": base,
                "seaweed_master_port": base + 1,
                "seaweed_volume_port": base + 2,
                "seaweed_filer_port": base + 3,
                "kafka_port": base + 4,
                "mlflow_port": base + 5,
                "prefect_port": base + 6,
            }
    raise RuntimeError("no free block of loopback ports")


def stack_settings(state_dir: Path) -> Settings:
    return Settings(stack={"state_dir": state_dir, **free_stack_ports()})


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    """S3 and Kafka, embedded and real, for the whole test session."""
    settings = stack_settings(tmp_path_factory.mktemp("stack"))
    stack.up(settings, services=("s3", "kafka"))
    yield settings
    stack.down(settings)


@pytest.fixture(scope="session")
def tracking(services):
    """The session's stack with MLflow and Prefect as well."""
    stack.up(services, services=("mlflow", "prefect"))
    yield services


@pytest.fixture
def tracked(tracking, tmp_path) -> Settings:
    """Like `plane`, with MLflow and Prefect too, and this test's own registered model."""
    settings = tracking.isolated(f"test-{uuid.uuid4().hex[:8]}", tmp_path)
    stack.ensure_topics(settings)
    return settings


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory) -> Path:
    """An untrained tiny policy that knows every task's words: fast to save, load and run."""
    from sim.tabletop import ALL_TASKS
    from worldmodel.policy import WorldModelPolicy
    from worldmodel.text_encoder import build_vocab

    directory = tmp_path_factory.mktemp("tiny-policy") / "policy"
    return WorldModelPolicy.create(build_vocab([t.instruction for t in ALL_TASKS]), "tiny").save(directory)


@pytest.fixture
def plane(services, tmp_path) -> Settings:
    """Settings with this test's own topics, consumer group, spool and index."""
    settings = services.isolated(f"test-{uuid.uuid4().hex[:8]}", tmp_path)
    stack.ensure_topics(settings)
    return settings
