"""A write-ahead spool on the robot's disk: episodes wait here until S3 and Kafka have them.

An entry is two files named by a monotonically increasing sequence number: the media object,
then the message, each written under a temporary name and renamed into place. The message's
rename commits the entry, so a crash leaves a whole entry or a stray media file that the next
start removes. Entries are shipped and removed strictly in sequence order, which keeps a
robot's episodes in order across outages and restarts.

One process owns a spool directory (an exclusive lock on `.lock`): a second agent pointed at the
same directory is refused instead of shipping and deleting the first one's entries. Owning it, the
spool reads the directory once, at open, and keeps the order of its entries in memory: a robot back
from a long outage holds up to `max_bytes` of entries (some 190,000 at 44 KB), and listing them
for every batch shipped took 31 ms a batch already at 20,000. The spool
holds at most `max_bytes`: past it `append` waits for the shipper to make room, and after
`wait_s` refuses with `SpoolFull`, as it does when the disk itself is full. An entry that can never
be shipped (unreadable, or refused by the broker whatever the retry) is moved to `quarantine/`
with a `.reason` file beside it, so it stops blocking the robot's ordered stream and stays on
disk for an operator to inspect.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from infra.errors import FleetError

MESSAGE, MEDIA = ".json", ".media"
QUARANTINE = "quarantine"


class SpoolBusy(FleetError):
    hint = "run one agent per spool directory (agent.spool_dir)"


class SpoolFull(FleetError):
    hint = "the episode was not kept; check that S3 and Kafka answer, or raise agent.spool_max_bytes"


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

    def episode_id(self) -> str:
        return self._parsed["episode_id"]

    def robot_id(self) -> str:
        return self._parsed["robot_id"]

    def media_key(self) -> str:
        return self._parsed["media"]["key"]

    def media_sha256(self) -> str:
        return self._parsed["media"]["sha256"]

    def parsed(self) -> dict:
        """The spooled message, parsed: read-only."""
        return self._parsed

    def media(self) -> bytes:
        return self.path(MEDIA).read_bytes()

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in (self.path(MESSAGE), self.path(MEDIA)) if p.exists())


class Spool:
    def __init__(self, root: Path, max_bytes: int | None = None, wait_s: float = 30.0):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.root / ".lock", "a+")  # noqa: SIM115 - held for the spool's life
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise SpoolBusy(f"spool {self.root} is in use by another process") from None
        self.max_bytes, self.wait_s = max_bytes, wait_s
        committed = set(self._seqs())
        for path in self.root.iterdir():  # half-written by a crash: never acknowledged
            if path.is_dir() or path.name == ".lock":
                continue
            stem = path.name.split(".", 1)[0]
            if path.name.endswith(".tmp") or (path.suffix == MEDIA and int(stem) not in committed):
                path.unlink()
        seqs = sorted(committed)
        self._next = seqs[-1] + 1 if seqs else 0
        self._bytes = sum(SpoolEntry(self.root, s).nbytes() for s in seqs)
        # Committed entries in order, and those still here: one removed out of order (quarantined)
        # leaves the queue when it reaches the head, so no operation grows with the backlog.
        self._order: deque[int] = deque(seqs)
        self._live: set[int] = set(seqs)
        self._appended: dict[int, float] = {}  # seq -> monotonic time, for entries of this process
        self._room = threading.Condition()

    def _seqs(self) -> list[int]:
        return sorted(int(p[: -len(MESSAGE)]) for p in os.listdir(self.root) if p.endswith(MESSAGE))

    def _dropped(self, seq: int) -> None:
        with self._room:
            self._live.discard(seq)
            self._appended.pop(seq, None)
            while self._order and self._order[0] not in self._live:
                self._order.popleft()

    def append(self, message: bytes, media: bytes) -> SpoolEntry:
        size = len(message) + len(media)
        with self._room:
            if self.max_bytes is not None:
                deadline = time.monotonic() + self.wait_s
                while self._bytes + size > self.max_bytes:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise SpoolFull(
                            f"spool {self.root} holds {self._bytes} bytes; {size} more would pass its cap "
                            f"of {self.max_bytes} (waited {self.wait_s:.0f} s for the shipper)"
                        )
                    self._room.wait(left)
            entry = SpoolEntry(self.root, self._next)
            self._next += 1
            self._bytes += size
        try:
            for suffix, data in ((MEDIA, media), (MESSAGE, message)):
                tmp = entry.path(suffix + ".tmp")
                tmp.write_bytes(data)
                os.rename(tmp, entry.path(suffix))
        except OSError as e:
            for suffix in (MEDIA + ".tmp", MESSAGE + ".tmp", MEDIA):
                entry.path(suffix).unlink(missing_ok=True)
            self._released(size)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SpoolFull(f"the disk under spool {self.root} is full") from e
            raise
        with self._room:  # sequence numbers are taken in order but may commit out of it
            if self._order and self._order[-1] > entry.seq:
                self._order = deque(sorted((*self._order, entry.seq)))
            else:
                self._order.append(entry.seq)
            self._live.add(entry.seq)
            self._appended[entry.seq] = time.monotonic()
        return entry

    def peek(self, n: int) -> list[SpoolEntry]:
        with self._room:
            live = (seq for seq in self._order if seq in self._live)
            return [SpoolEntry(self.root, seq) for seq in itertools.islice(live, n)]

    def appended_at(self, entry: SpoolEntry) -> float:
        """When the entry was spooled (time.monotonic); 0 for one found on disk at start."""
        return self._appended.get(entry.seq, 0.0)

    def remove(self, entry: SpoolEntry) -> None:
        size = entry.nbytes()
        entry.path(MESSAGE).unlink(missing_ok=True)
        entry.path(MEDIA).unlink(missing_ok=True)
        self._dropped(entry.seq)
        self._released(size)

    def quarantine(self, entry: SpoolEntry, reason: str) -> Path:
        """Move an entry that can never be shipped out of the way, with why."""
        folder = self.root / QUARANTINE
        folder.mkdir(exist_ok=True)
        size = entry.nbytes()
        (folder / f"{entry.seq:012d}.reason").write_text(reason + "\n")
        if entry.path(MEDIA).exists():
            os.rename(entry.path(MEDIA), folder / entry.path(MEDIA).name)
        if entry.path(MESSAGE).exists():
            os.rename(entry.path(MESSAGE), folder / entry.path(MESSAGE).name)
        self._dropped(entry.seq)
        self._released(size)
        return folder

    def quarantined(self) -> list[str]:
        folder = self.root / QUARANTINE
        return sorted(p.read_text().strip() for p in folder.glob("*.reason")) if folder.exists() else []

    def _released(self, size: int) -> None:
        with self._room:
            self._bytes -= size
            self._room.notify_all()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def close(self) -> None:
        self._lock_file.close()

    def __len__(self) -> int:
        with self._room:
            return len(self._live)
