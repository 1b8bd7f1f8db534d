"""MLflow on PostgreSQL, as production runs it: the registry's whole path against that store."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from pydantic import SecretStr

from infra import stack
from infra.settings import Settings
from registry.model_store import ModelStore
from registry.rollout import Rollout
from tests.conftest import free_stack_ports

pytestmark = pytest.mark.integration


@pytest.fixture
def mlflow_on_postgres(services, postgres, tmp_path):
    database = f"mlflow_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres.index_url, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {database}")
    store = postgres.index_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{database}"
    access, secret = services.s3_credentials()
    settings = Settings(
        stack={"state_dir": tmp_path / "stack", **free_stack_ports()},
        s3={"endpoint": services.s3_endpoint, "access_key": access, "secret_key": secret},
        kafka={"bootstrap_servers": services.kafka_bootstrap},
        mlflow={"backend_store_uri": SecretStr(store)},
    ).isolated("pg", tmp_path)
    stack.up(settings, services=("mlflow",))
    stack.ensure_topics(settings)
    yield settings, postgres.index_url.rsplit("/", 1)[0] + f"/{database}"
    stack.down(settings)


def test_the_registry_registers_crowns_and_loads_with_mlflow_on_postgres(mlflow_on_postgres, tiny_policy_dir):
    settings, database = mlflow_on_postgres
    store = ModelStore(settings)
    version = store.register(tiny_policy_dir)
    Rollout(settings).crown(version.version)
    champion = store.by_alias("champion")
    assert champion.version == version.version
    assert store.fetch(champion).exists()  # signed, digests checked, downloaded from S3
    with psycopg.connect(database) as db:  # the registry lives in PostgreSQL, not in a file
        names = db.execute("SELECT name FROM registered_models").fetchall()
    assert names == [(settings.registry.model_name,)]
    password = settings.mlflow.backend_store_uri.get_secret_value().split(":")[2].split("@")[0]
    assert password not in (settings.state_dir / "stack.json").read_text()  # not on the command line either
