"""A write-ahead spool on the robot's disk: episodes wait here until S3 and Kafka have them.

An entry is two files named by a monotonically increasing sequence number: the media object,
then the message, each written under a temporary name and renamed into place. The message's
rename commits the entry, so a crash leaves a whole entry or a stray media file that the next
start removes. Entries are shipped and removed strictly in sequence order, which keeps a
robot's episodes in order across outages and restarts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

MESSAGE, MEDIA = ".json", ".media"


@dataclass
class SpoolEntry:
    root: Path
    seq: int

    def path(self, suffix: str) -> Path:
        return self.root / f"{self.seq:012d}{suffix}"

    def message(self) -> bytes:
        return self._message

    @cached_property
    def _message(self) -> bytes:
        return self.path(MESSAGE).read_bytes()

    @cached_property
    def _parsed(self) -> dict:
        return json.loads(self._message)

    def robot_id(self) -> str:
        return self._parsed["robot_id"]

    def media_key(self) -> str:
        return self._parsed["media"]["key"]

    def media(self) -> bytes:
        return self.path(MEDIA).read_bytes()


class Spool:
    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        committed = set(self._seqs())
        for path in self.root.iterdir():  # half-written by a crash: never acknowledged
            stem = path.name.split(".", 1)[0]
            if path.name.endswith(".tmp") or (path.suffix == MEDIA and int(stem) not in committed):
                path.unlink()
        seqs = self._seqs()
        self._next = seqs[-1] + 1 if seqs else 0

    def _seqs(self) -> list[int]:
        return sorted(int(p[: -len(MESSAGE)]) for p in os.listdir(self.root) if p.endswith(MESSAGE))

    def append(self, message: bytes, media: bytes) -> SpoolEntry:
        entry = SpoolEntry(self.root, self._next)
        self._next += 1
        for suffix, data in ((MEDIA, media), (MESSAGE, message)):
            tmp = entry.path(suffix + ".tmp")
            tmp.write_bytes(data)
            os.rename(tmp, entry.path(suffix))
        return entry

    def peek(self, n: int) -> list[SpoolEntry]:
        return [SpoolEntry(self.root, seq) for seq in self._seqs()[:n]]

    def remove(self, entry: SpoolEntry) -> None:
        entry.path(MESSAGE).unlink()
        entry.path(MEDIA).unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self._seqs())
