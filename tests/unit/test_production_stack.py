"""The production stack definition: Compose-spec valid, no secrets, wired to the settings."""

import json
import os
import re
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from infra.clients import kafka_common
from infra.settings import Settings

PRODUCTION = Path(__file__).parents[2] / "infra" / "production"
# `make install` fetches the docker-compose wheel that carries the Compose specification schema.
SPEC_WHEEL = Path(
    os.environ.get(
        "FLEET_COMPOSE_SPEC_WHEEL",
        Path(__file__).parents[2] / ".venv" / "compose-spec" / "docker_compose-1.29.2-py2.py3-none-any.whl",
    )
)


def interpolated(text: str) -> dict:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, with every variable set."""
    return yaml.safe_load(re.sub(r"\$\{([A-Z0-9_]+)(?::[-?][^}]*)?\}", lambda m: f"value-of-{m[1].lower()}", text))


def test_compose_file_follows_the_compose_specification():
    if not SPEC_WHEEL.exists():
        pytest.fail(f"{SPEC_WHEEL} is missing; run `make install`")
    with zipfile.ZipFile(SPEC_WHEEL) as wheel:
        spec = json.loads(wheel.read("compose/config/compose_spec.json"))
    compose = interpolated((PRODUCTION / "docker-compose.yml").read_text())
    jsonschema.validate(compose, spec)
    assert {"kafka", "minio", "postgres", "mlflow", "prefect"} <= set(compose["services"])
    assert compose["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def compose_interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation: ${VAR:?message} with VAR unset or empty stops everything."""

    def value(m: re.Match) -> str:
        name, op, arg = m[1], m[2], m[3]
        if env.get(name):
            return env[name]
        if op == ":?":
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        return arg if op == ":-" else ""

    return re.sub(r"\$\{([A-Z0-9_]+)(:[-?])?([^}]*)\}", value, text)


def secrets_in_env_example() -> list[str]:
    names = [line.split("=")[0] for line in (PRODUCTION / ".env.example").read_text().splitlines() if "=" in line]
    return [n for n in names if not n.startswith("#") and re.search("PASSWORD|SECRET", n)]


def test_compose_file_holds_no_secret():
    text = (PRODUCTION / "docker-compose.yml").read_text()
    for var in ("MINIO_ROOT_PASSWORD", "POSTGRES_PASSWORD"):
        assert re.search(rf"{var}: \$\{{{var}:\?", text), f"{var} must come from the environment"


@pytest.mark.parametrize("missing", secrets_in_env_example())
def test_compose_starts_nothing_with_a_secret_unset(missing):
    text = (PRODUCTION / "docker-compose.yml").read_text()
    every = dict.fromkeys(re.findall(r"\$\{([A-Z0-9_]+)", text), "set")
    compose_interpolate(text, every)  # with everything set it interpolates
    with pytest.raises(ValueError, match=missing):
        compose_interpolate(text, every | {missing: ""})


def test_robots_and_the_learner_have_their_own_minio_users_and_the_root_one_stays_with_minio():
    compose = interpolated((PRODUCTION / "docker-compose.yml").read_text())
    robot = json.loads((PRODUCTION / "minio-robot-policy.json").read_text())
    (grant,) = robot["Statement"]
    assert grant["Effect"] == "Allow" and set(grant["Action"]) == {"s3:PutObject", "s3:AbortMultipartUpload"}
    assert grant["Resource"] == ["arn:aws:s3:::fleet-episodes/episodes/${aws:username}/*"]  # no reads, own prefix
    learner = json.loads((PRODUCTION / "minio-learner-policy.json").read_text())
    assert all("Admin" not in a and a != "s3:*" for s in learner["Statement"] for a in s["Action"])
    setup = compose["services"]["minio-setup"]
    assert any("minio-robot-policy.json" in v for v in setup["volumes"])
    mlflow = compose["services"]["mlflow"]
    assert mlflow["environment"]["AWS_ACCESS_KEY_ID"] == "value-of-learner_s3_user"
    assert mlflow["depends_on"]["minio-setup"] == {"condition": "service_completed_successfully"}


def test_production_settings_point_every_service_outside(monkeypatch):
    monkeypatch.setenv("FLEET_CONFIG", str(PRODUCTION / "fleet.toml"))
    settings = Settings()
    assert not any(settings.is_embedded(s) for s in ("s3", "kafka", "mlflow", "prefect"))
    assert settings.kafka_bootstrap == "localhost:9094"


def test_minio_is_checked_with_the_client_its_image_ships_not_curl():
    compose = interpolated((PRODUCTION / "docker-compose.yml").read_text())
    assert compose["services"]["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    # mlflow waits on it: a check that cannot run would keep the registry down for good
    assert compose["services"]["mlflow"]["depends_on"]["minio"] == {"condition": "service_healthy"}


def test_mlflow_asks_for_a_login_whose_secrets_must_be_set():
    text = (PRODUCTION / "docker-compose.yml").read_text()
    mlflow = interpolated(text)["services"]["mlflow"]
    assert "--app-name basic-auth" in mlflow["command"]
    for var in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert re.search(rf"{var}: \$\{{[A-Z0-9_]+:\?", text), f"{var} must come from the environment, and be set"
    ini = (PRODUCTION / "mlflow-auth.ini").read_text()
    assert "admin_password" not in ini and "basic_auth.db" in ini


def test_kafka_outside_the_compose_network_asks_for_a_scram_login_and_holds_clients_to_acls(monkeypatch):
    kafka = interpolated((PRODUCTION / "docker-compose.yml").read_text())["services"]["kafka"]["environment"]
    protocols = dict(p.split(":") for p in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert (
        protocols["EXTERNAL"] in ("SASL_PLAINTEXT", "SASL_SSL")
        and kafka["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    )
    assert "ScramLoginModule" in kafka["KAFKA_LISTENER_NAME_EXTERNAL_SCRAM___SHA___512_SASL_JAAS_CONFIG"]
    assert kafka["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    monkeypatch.setenv("FLEET_CONFIG", str(PRODUCTION / "fleet.toml"))
    monkeypatch.setenv("FLEET_KAFKA__SASL_USERNAME", "fleet-learner")
    monkeypatch.setenv("FLEET_KAFKA__SASL_PASSWORD", "pw")
    conf = kafka_common(Settings())
    assert (conf["security_protocol"], conf["sasl_mechanism"]) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
    assert (conf["sasl_plain_username"], conf["sasl_plain_password"]) == ("fleet-learner", "pw")


def granted(script: str, user_var: str) -> list[str]:
    """The kafka-acls arguments kafka-setup's script passes for one user."""
    return [
        line.split(f'acl "$${user_var}"', 1)[1].strip() for line in script.splitlines() if f'acl "$${user_var}"' in line
    ]


def test_robots_may_only_write_episodes_and_telemetry_and_read_rollout_events():
    text = (PRODUCTION / "docker-compose.yml").read_text()
    setup = yaml.safe_load(text)["services"]["kafka-setup"]
    script, topics = setup["command"][0], Settings().kafka
    assert granted(script, "ROBOT_KAFKA_USER") == [
        f"--operation Write --operation Describe --topic {topics.episodes_topic} --topic {topics.telemetry_topic}",
        f"--operation Read --operation Describe --topic {topics.rollouts_topic}",
    ]
    learner = granted(script, "LEARNER_KAFKA_USER")
    assert any("--topic fleet. --group fleet --resource-pattern-type prefixed" in g for g in learner)
    for name in ("LEARNER_KAFKA_USER", "ROBOT_KAFKA_USER"):
        assert f'scram "$${name}"' in script
    for var in ("LEARNER_KAFKA_PASSWORD", "ROBOT_KAFKA_PASSWORD"):
        assert re.search(rf"{var}: \$\{{{var}:\?", text), f"{var} must come from the environment, and be set"


def test_prefect_asks_for_a_login_whose_password_must_be_set():
    text = (PRODUCTION / "docker-compose.yml").read_text()
    assert re.search(r"PREFECT_SERVER_API_AUTH_STRING: admin:\$\{PREFECT_ADMIN_PASSWORD:\?", text)
