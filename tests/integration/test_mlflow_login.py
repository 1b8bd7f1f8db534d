"""An MLflow server with a login (MLflow's basic-auth app), as production runs it: the platform
registers and loads with the configured credentials, and is refused, clearly, without them."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest
from pydantic import SecretStr

from infra import stack
from infra.errors import FleetError
from infra.settings import Settings
from registry.model_store import ModelStore
from tests.conftest import free_stack_ports

pytestmark = pytest.mark.integration


@pytest.fixture
def mlflow_with_login(services, tmp_path, monkeypatch):
    # the client takes its credentials from the environment: leave it as it was for other tests
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, "")
    access, secret = services.s3_credentials()
    settings = Settings(
        stack={"state_dir": tmp_path / "stack", **free_stack_ports()},
        s3={"endpoint": services.s3_endpoint, "access_key": access, "secret_key": secret},
        mlflow={"username": "learner", "password": "a-long-secret"},
    ).isolated("login", tmp_path)
    stack.up(settings, services=("mlflow",))
    yield settings
    stack.down(settings)


def test_with_the_login_a_version_registers_and_loads_and_without_it_the_server_refuses(
    mlflow_with_login, tiny_policy_dir
):
    settings = mlflow_with_login
    version = ModelStore(settings).register(tiny_policy_dir)
    assert ModelStore(settings).fetch(version).exists()

    search = settings.mlflow_tracking_uri + "/api/2.0/mlflow/registered-models/search"
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(search, timeout=10)
    assert anonymous.value.code == 401

    wrong = settings.model_copy(
        update={"mlflow": settings.mlflow.model_copy(update={"password": SecretStr("guessed")})}
    )
    with pytest.raises(FleetError, match="refused the login") as refused:
        ModelStore(wrong).versions()
    assert "FLEET_MLFLOW__PASSWORD" in refused.value.hint


def test_a_robots_login_loads_the_fleets_model_and_may_not_register_one(mlflow_with_login, tiny_policy_dir):
    settings = mlflow_with_login
    version = ModelStore(settings).register(tiny_policy_dir)
    _create_user(settings, "robot-000", "robot-secret")  # an ordinary user: MLflow's default permission, READ
    robot = settings.model_copy(
        update={
            "mlflow": settings.mlflow.model_copy(
                update={"username": "robot-000", "password": SecretStr("robot-secret")}
            )
        }
    )
    assert ModelStore(robot).fetch(ModelStore(robot).get(version.version)).exists()
    with pytest.raises(FleetError, match="does not permit"):
        ModelStore(robot).register(tiny_policy_dir)
    assert [v.version for v in ModelStore(settings).versions()] == [version.version]


def _create_user(settings, username: str, password: str) -> None:
    """Through MLflow's own admin API, as the learner (the server's admin) would."""
    body = json.dumps({"username": username, "password": password}).encode()
    request = urllib.request.Request(
        settings.mlflow_tracking_uri + "/api/2.0/mlflow/users/create", data=body, method="POST"
    )
    login = base64.b64encode(f"{settings.mlflow.username}:{settings.mlflow.password.get_secret_value()}".encode())
    request.add_header("Authorization", f"Basic {login.decode()}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
