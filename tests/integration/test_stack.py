"""`fleet stack` against real processes: idempotent up, clear port errors, down stops only its own."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from infra import stack
from infra.clients import port_open
from infra.settings import Settings
from infra.stack import StackError
from tests.conftest import free_stack_ports, stack_settings

pytestmark = pytest.mark.integration


def test_status_reports_every_service_and_up_twice_changes_nothing(services):
    status = stack.status(services)["services"]
    assert set(status) == {"s3", "kafka", "mlflow", "prefect"}
    assert status["s3"]["healthy"] and status["kafka"]["healthy"]
    pids = {name: status[name]["pid"] for name in ("s3", "kafka")}
    again = stack.up(services, services=("s3", "kafka"))["services"]
    assert {name: again[name]["pid"] for name in ("s3", "kafka")} == pids


def test_status_json_from_the_command_line(services):
    env = {f"FLEET_STACK__{k.upper()}": str(v) for k, v in services.stack.model_dump().items()}
    with socket.socket() as s:  # a port nothing listens on: MLflow there is certainly down
        s.bind(("127.0.0.1", 0))
        env["FLEET_STACK__MLFLOW_PORT"] = str(s.getsockname()[1])
    out = subprocess.run(
        [sys.executable, "-m", "cli", "stack", "status", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    services_json = json.loads(out.stdout)["services"]
    assert services_json["s3"] == {**services_json["s3"], "healthy": True, "url": services.s3_endpoint}
    assert services_json["mlflow"]["healthy"] is False
    assert out.returncode == 1  # not everything is healthy


def test_a_taken_port_is_named_with_its_service(tmp_path):
    settings = stack_settings(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.stack.kafka_port))
        squatter.listen()
        with pytest.raises(StackError, match=f"port {settings.stack.kafka_port} \\(kafka"):
            stack.start_service(settings, "kafka")


def test_down_stops_only_what_up_started(tmp_path):
    settings = stack_settings(tmp_path)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        stack.up(settings, services=("s3",))
        pid = stack.status(settings)["services"]["s3"]["pid"]
        assert stack.down(settings) == ["s3"]
        assert not stack.status(settings)["services"]["s3"]["healthy"]
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert bystander.poll() is None
        assert stack.down(settings) == []
    finally:
        bystander.kill()


def test_services_configured_elsewhere_are_not_started(tmp_path, services):
    access, secret = services.s3_credentials()
    settings = Settings(
        stack={"state_dir": tmp_path, **free_stack_ports()},
        s3={"endpoint": services.s3_endpoint, "access_key": access, "secret_key": secret},
    )
    s3 = stack.up(settings, services=("s3",))["services"]["s3"]
    assert s3 == {"url": services.s3_endpoint, "healthy": True, "embedded": False}  # no pid: none started
    assert not port_open("127.0.0.1", settings.stack.s3_port)


def test_a_service_that_dies_is_restarted_but_one_stopped_on_purpose_is_not(tmp_path):
    settings = stack_settings(tmp_path)
    try:
        stack.up(settings, services=("s3",))
        first = stack.status(settings)["services"]["s3"]["pid"]
        os.killpg(first, signal.SIGKILL)  # dies behind the stack's back
        os.waitpid(first, 0)
        assert stack.supervise_once(settings) == ["s3"]
        s3 = stack.status(settings)["services"]["s3"]
        assert s3["healthy"] and s3["pid"] != first

        stack.stop_service(settings, "s3")
        assert stack.supervise_once(settings) == []
        assert not stack.status(settings)["services"]["s3"]["healthy"]
    finally:
        stack.down(settings)
