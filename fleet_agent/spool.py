"""A write-ahead spool on the robot's disk: episodes wait here until S3 and Kafka have them.

Each entry is a directory named by a monotonically increasing sequence number, written under a
temporary name and renamed into place, so a crash leaves either a whole entry or none. Entries
are shipped and removed strictly in sequence order, which keeps each robot's episodes in order
across outages and restarts.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

MESSAGE = "episode.json"
UPLOADED = ".uploaded"


@dataclass(frozen=True)
class SpoolEntry:
    path: Path

    @property
    def seq(self) -> int:
        return int(self.path.name)

    def message(self) -> bytes:
        return (self.path / MESSAGE).read_bytes()

    def robot_id(self) -> str:
        return json.loads(self.message())["robot_id"]

    def blobs(self) -> dict[str, bytes]:
        """Compressed arrays by S3 key (the key is stored in the episode message)."""
        media = json.loads(self.message())["media"]
        return {ref["key"]: (self.path / Path(ref["key"]).name).read_bytes() for ref in media.values()}

    @property
    def uploaded(self) -> bool:
        return (self.path / UPLOADED).exists()

    def mark_uploaded(self) -> None:
        (self.path / UPLOADED).touch()


class Spool:
    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob("tmp-*"):  # half-written by a crash: never acknowledged
            shutil.rmtree(stale, ignore_errors=True)
        existing = self._entry_dirs()
        self._next = int(existing[-1].name) + 1 if existing else 0

    def _entry_dirs(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if p.name.isdigit())

    def append(self, message: bytes, blobs: dict[str, bytes]) -> SpoolEntry:
        """Write one episode (message JSON, blobs by file name) atomically; returns its entry."""
        seq = self._next
        self._next += 1
        tmp = self.root / f"tmp-{seq:012d}"
        tmp.mkdir()
        for name, blob in blobs.items():
            (tmp / name).write_bytes(blob)
        (tmp / MESSAGE).write_bytes(message)
        final = self.root / f"{seq:012d}"
        os.rename(tmp, final)
        return SpoolEntry(final)

    def peek(self, n: int) -> list[SpoolEntry]:
        return [SpoolEntry(p) for p in self._entry_dirs()[:n]]

    def remove(self, entry: SpoolEntry) -> None:
        shutil.rmtree(entry.path)

    def __len__(self) -> int:
        return len(self._entry_dirs())
