"""The embedded stack's processes: start, wait until ready, stop, supervise.

Each service runs in its own process group and is recorded, with its kernel start time, in
``<state_dir>/stack.json``; ``down`` stops only those recorded processes, and the supervisor
restarts a recorded one that died. Everything a service writes stays under the state dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from infra.clients import port_open
from infra.files import write_json_atomic
from infra.settings import SERVICES, Service, Settings
from infra.stack.provision import ensure_buckets, ensure_topics
from infra.stack.services import SERVICES_IN_ORDER, EmbeddedService, StackError

SUPERVISOR = "supervisor"


# -- state file -------------------------------------------------------------------------------
def _state_path(s: Settings) -> Path:
    return s.state_dir / "stack.json"


def _read_state(s: Settings) -> dict[str, dict]:
    path = _state_path(s)
    return json.loads(path.read_text()) if path.exists() else {}


def _write_state(s: Settings, state: dict[str, dict]) -> None:
    path = _state_path(s)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, state, indent=2)


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
            **_as_user(svc.user),
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


def _as_user(name: str | None) -> dict:
    if name is None or os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(name)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


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
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
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


def running_pid(s: Settings, name: Service) -> int | None:
    """The pid of the service `up` started, if it still runs."""
    record = _read_state(s).get(name)
    return record["pid"] if record and _ours(record["pid"], record) else None


def cpu_seconds(s: Settings, name: Service) -> float | None:
    """User plus system CPU seconds the embedded service has used since it started; None when
    it is not ours or not running (a benchmark then reports the client's side alone)."""
    pid = running_pid(s, name)
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=os.environ | {"FLEET_STACK__STATE_DIR": str(s.state_dir)},
            start_new_session=True,
        )
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
        if s.uses(name) and s.is_embedded(name):
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
        if not s.uses(name):
            continue
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
