"""Files that other processes read while they are being written."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json_atomic(path: Path, value, indent: int | None = None) -> None:
    """Write VALUE as JSON to PATH so that a reader sees the old file or the new one, never half of
    one: written beside it, then renamed over it (a rename within one folder is atomic on POSIX)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=indent))
    tmp.replace(path)
