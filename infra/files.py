"""Files that other processes read while they are being written."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path


def write_json_atomic(path: Path, value, indent: int | None = None, mode: int = 0o644) -> None:
    """Write VALUE as JSON to PATH so that a reader sees the old file or the new one, never half of
    one: written beside it, then renamed over it (a rename within one folder is atomic on POSIX).
    The file has MODE from its first byte (0o600 for secrets)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(value, indent=indent))
    os.chmod(tmp, mode)  # O_CREAT's mode is masked by the umask
    tmp.replace(path)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on PATH (made if missing) for the block: one process at a time."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock
