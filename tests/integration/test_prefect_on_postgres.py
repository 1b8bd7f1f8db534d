"""Prefect on PostgreSQL, as production runs it: a flow's run recorded by a server whose database
is a real PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import psycopg
import pytest
from pydantic import SecretStr

from infra import stack
from infra.settings import Settings
from tests.conftest import free_stack_ports

pytestmark = pytest.mark.integration

FLOW = """
from prefect import flow

@flow(name="on-postgres")
def answer():
    return 42

assert answer() == 42
"""


@pytest.fixture
def prefect_on_postgres(postgres, tmp_path):
    database = f"prefect_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres.index_url, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {database}")
    server = postgres.index_url.rsplit("/", 1)[0]
    settings = Settings(
        stack={"state_dir": tmp_path / "stack", **free_stack_ports()},
        prefect={"database_url": SecretStr(server.replace("postgresql://", "postgresql+asyncpg://") + f"/{database}")},
    )
    stack.up(settings, services=("prefect",))
    yield settings, f"{server}/{database}"
    stack.down(settings)


def test_a_flow_run_is_recorded_by_prefect_on_postgres(prefect_on_postgres, tmp_path):
    settings, database = prefect_on_postgres
    # In a fresh interpreter: a Prefect client keeps the API URL it was first imported with.
    env = os.environ | {"PREFECT_API_URL": settings.prefect_api_url, "PREFECT_HOME": str(tmp_path / "client")}
    subprocess.run([sys.executable, "-c", FLOW], env=env, check=True, timeout=180)
    with psycopg.connect(database) as db:  # the run lives in PostgreSQL, not in a file
        runs = db.execute(
            "SELECT r.state_type::text FROM flow_run r JOIN flow f ON f.id = r.flow_id WHERE f.name = 'on-postgres'"
        ).fetchall()
    assert runs == [("COMPLETED",)]
    assert not list((settings.state_dir / "prefect").glob("*.db"))
    password = settings.prefect.database_url.get_secret_value().split(":")[2].split("@")[0]
    assert password not in (settings.state_dir / "stack.json").read_text()  # not on the command line either
