"""Per-robot S3 credentials for the embedded S3: a robot may write its own prefix and nothing else.

The platform's own key (the learner's, the dashboard's) is the admin. Each robot gets a key
whose only grant is `Write:<episodes bucket>/episodes/<robot_id>/*`: it cannot read any episode,
write another robot's, list a bucket or touch MLflow's artifacts. The keys live in
`<state_dir>/s3/robots.json` (mode 600); adding one rewrites SeaweedFS's identities file and
sends it SIGHUP, which reloads it without a restart. For MinIO, the same grant is one policy for
every robot (`infra/production/minio-robot-policy.json`, with `${aws:username}` as the robot id).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import time

from minio.error import S3Error
from pydantic import SecretStr

from infra.clients import s3_client
from infra.errors import UsageError
from infra.files import locked, write_json_atomic
from infra.settings import Settings
from infra.stack.lifecycle import running_pid
from infra.stack.services import StackError, robot_identities_path, write_seaweed_identities

# Stricter than the episode contract's names: the id becomes part of a SeaweedFS action string.
ROBOT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def robot_credentials(s: Settings, robot_id: str) -> tuple[str, str]:
    """This robot's access and secret key (made on first request), live in the running S3."""
    if not s.is_embedded("s3"):
        raise UsageError(
            f"S3 at {s.s3_endpoint} is not the embedded one: create the robot's user there",
            hint="for MinIO, attach infra/production/minio-robot-policy.json to a user named after the robot",
        )
    if not ROBOT_ID.match(robot_id):
        raise UsageError(f"robot id {robot_id!r}: use letters, digits, '.', '_' and '-' (at most 128)")
    path = robot_identities_path(s)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.with_suffix(".lock")):  # two provisioning scripts at once keep both robots
        robots = json.loads(path.read_text()) if path.exists() else {}
        if robot_id not in robots:
            robots[robot_id] = {"access_key": "robot" + secrets.token_hex(8), "secret_key": secrets.token_urlsafe(30)}
            write_json_atomic(path, robots, mode=0o600)
            write_seaweed_identities(s)
            _reload(s)
    access, secret = robots[robot_id]["access_key"], robots[robot_id]["secret_key"]
    _wait_until_known(s, robot_id, access, secret)
    return access, secret


def as_robot(s: Settings, access: str, secret: str) -> Settings:
    """These settings with a robot's S3 keys in place of the platform's."""
    keys = {"access_key": SecretStr(access), "secret_key": SecretStr(secret)}
    return s.model_copy(update={"s3": s.s3.model_copy(update=keys)})


def _reload(s: Settings) -> None:
    pid = running_pid(s, "s3")
    if pid is not None:
        os.kill(pid, signal.SIGHUP)  # SeaweedFS reloads its identities file on SIGHUP


def _wait_until_known(s: Settings, robot_id: str, access: str, secret: str, timeout_s: float = 15.0) -> None:
    """Until the S3 server knows the key: an unknown key is InvalidAccessKeyId, a known one that
    may not read is AccessDenied (a robot's key may not read even its own prefix)."""
    client = s3_client(as_robot(s, access, secret))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.stat_object(s.s3.episodes_bucket, f"episodes/{robot_id}/.probe")
            return
        except S3Error as e:
            if e.code != "InvalidAccessKeyId":
                return
        if time.monotonic() > deadline:
            raise StackError(f"the embedded S3 did not take robot {robot_id}'s key within {timeout_s:.0f} s")
        time.sleep(0.2)
