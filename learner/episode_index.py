"""The learner's episode index: every accepted episode, queryable, surviving restarts.

SQLite in WAL mode: a single file beside the learner, transactional (an episode and its
dedupe key commit together, before the Kafka offset does), indexed for the questions people and
the curation step ask (by robot, task, model version, time, success), and able to serve
hundreds of thousands of rows to a dashboard without a server to run. One learner writes; any
number of readers may read while it does.

The read queries are one layer (`EpisodeQueries`) shared by the learner's `EpisodeIndex` (which
writes) and the dashboard's `IndexReader` (read-only, a connection per query).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from infra.contracts.episode import Episode
from infra.errors import FleetError

SCHEMA = """
CREATE TABLE IF NOT EXISTS episodes (
    episode_id TEXT PRIMARY KEY,
    robot_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    instruction TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    world_model_version TEXT NOT NULL,
    idm_version TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL,
    published_at REAL NOT NULL,
    ingested_at REAL NOT NULL,
    success INTEGER NOT NULL,
    success_source TEXT NOT NULL,
    n_steps INTEGER NOT NULL,
    n_decisions INTEGER NOT NULL,
    n_rejections INTEGER NOT NULL,
    source_topic TEXT,
    source_partition INTEGER,
    source_offset INTEGER,
    episode_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS episodes_policy ON episodes (policy_version, started_at);
CREATE INDEX IF NOT EXISTS episodes_success ON episodes (success, started_at);
-- Covering indexes: the dashboard's aggregates read these, never the wide rows (10x faster at 100k).
CREATE INDEX IF NOT EXISTS episodes_robot_cover ON episodes (robot_id, started_at, ended_at, success, policy_version);
CREATE INDEX IF NOT EXISTS episodes_task_cover ON episodes (task_id, started_at, ended_at, success, policy_version);
CREATE INDEX IF NOT EXISTS episodes_time_cover ON episodes (started_at, policy_version, success);
CREATE INDEX IF NOT EXISTS episodes_ingested ON episodes (ingested_at, published_at);
-- What the covering indexes replaced: an index file from before them would keep updating both.
DROP INDEX IF EXISTS episodes_robot;
DROP INDEX IF EXISTS episodes_task;
DROP INDEX IF EXISTS episodes_time;
"""


@dataclass(frozen=True)
class Provenance:
    """Where in Kafka an episode was read from, and when it was indexed."""

    topic: str
    partition: int
    offset: int
    ingested_at: float


class IndexMissing(FleetError):
    """No episode index yet: the learner creates it when it ingests its first episode."""


class EpisodeQueries:
    """The questions asked of the index, over `_rows(sql, args)`, which each reader provides."""

    def _rows(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        raise NotImplementedError

    def count(self, **filters) -> int:
        where, args = _where(**filters)
        return self._rows(f"SELECT COUNT(*) FROM episodes {where}", args)[0][0]

    def watermark(self) -> float | None:
        """The latest ingest time in the index: what a round has seen up to."""
        return self._rows("SELECT MAX(ingested_at) FROM episodes")[0][0]

    def episode_ids(self, **filters) -> list[str]:
        where, args = _where(**filters)
        return [r[0] for r in self._rows(f"SELECT episode_id FROM episodes {where}", args)]

    def query(self, limit: int | None = None, **filters) -> list[Episode]:
        where, args = _where(**filters)
        sql = f"SELECT episode_json FROM episodes {where} ORDER BY started_at"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [Episode.model_validate_json(r[0]) for r in self._rows(sql, args)]

    def by_ids(self, episode_ids: list[str]) -> list[Episode]:
        """The episodes with these ids (those the index has), in chunks SQLite accepts."""
        out = []
        for i in range(0, len(episode_ids), 900):
            chunk = episode_ids[i : i + 900]
            sql = f"SELECT episode_json FROM episodes WHERE episode_id IN ({','.join('?' * len(chunk))})"
            out += [Episode.model_validate_json(r[0]) for r in self._rows(sql, chunk)]
        return out

    def episode_json(self, episode_id: str) -> str | None:
        rows = self._rows("SELECT episode_json FROM episodes WHERE episode_id = ?", (episode_id,))
        return rows[0][0] if rows else None

    def latencies_s(self, **filters) -> list[float]:
        """Time from publish to indexed, per episode: the data plane's end-to-end latency."""
        where, args = _where(**filters)
        return [r[0] for r in self._rows(f"SELECT ingested_at - published_at FROM episodes {where}", args)]

    def ingest_lag_s(self, last: int = 2000) -> list[float]:
        """Publish-to-indexed seconds of the latest episodes."""
        rows = self._rows("SELECT ingested_at - published_at FROM episodes ORDER BY ingested_at DESC LIMIT ?", (last,))
        return [r[0] for r in rows]

    def per(self, by: Literal["robot_id", "task_id", "policy_version"]) -> list[tuple[str, int, int, float, str]]:
        """(key, episodes, successes, last seen, version of the latest episode) per robot, task or version."""
        if by not in ("robot_id", "task_id", "policy_version"):
            raise ValueError(f"cannot group by {by!r}")
        # SQLite takes the bare column (policy_version) from the row that holds MAX(ended_at).
        return self._rows(
            f"SELECT {by}, COUNT(*), SUM(success), MAX(ended_at), policy_version FROM episodes GROUP BY {by} ORDER BY {by}"
        )

    def success_timeline(self, buckets: int = 60) -> tuple[float, list[tuple[float, str, int, int]]]:
        """(bucket width s, [(bucket start, policy version, episodes, successes)]) over the whole
        history; an episode counts in the bucket it started in."""
        first, last = self._rows("SELECT MIN(started_at), MAX(started_at) FROM episodes")[0]
        if first is None:
            return 0.0, []
        width = _nice_width(max(last - first, 1.0) / buckets)
        rows = self._rows(
            "SELECT CAST(started_at / ? AS INTEGER) * ?, policy_version, COUNT(*), SUM(success) "
            "FROM episodes GROUP BY 1, 2 ORDER BY 1",
            (width, width),
        )
        return width, rows

    def latest(self, limit: int = 200) -> list[tuple]:
        """The latest episodes: (id, robot, task, version, ended_at, success, steps, decisions, rejections)."""
        return self._rows(
            "SELECT episode_id, robot_id, task_id, policy_version, ended_at, success, n_steps, n_decisions, "
            "n_rejections FROM episodes ORDER BY started_at DESC LIMIT ?",
            (limit,),
        )


class EpisodeIndex(EpisodeQueries):
    """The learner's index: the one writer. A context manager, so that it is closed on every path."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a process crash; only an OS crash can lose the
        # last transactions, and those offsets were not committed either, so Kafka redelivers.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def __enter__(self) -> EpisodeIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _rows(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        return self._db.execute(sql, args).fetchall()

    def record(self, batch: Iterable[tuple[Episode, Provenance]]) -> tuple[int, int]:
        """Insert a batch in one transaction; returns (inserted, duplicates dropped)."""
        rows = [_row(ep, prov) for ep, prov in batch]
        if not rows:
            return 0, 0
        before = self._db.total_changes
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(f"INSERT OR IGNORE INTO episodes VALUES ({','.join('?' * len(rows[0]))})", rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        inserted = self._db.total_changes - before
        return inserted, len(rows) - inserted

    def close(self) -> None:
        self._db.close()


class IndexReader(EpisodeQueries):
    """Read-only, one connection per query: SQLite's WAL lets it read while the learner writes."""

    def __init__(self, path: Path):
        self.path = path

    def _rows(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        if not self.path.exists():
            raise IndexMissing(
                f"no episode index at {self.path} yet: the learner creates it when it ingests its first episode",
                hint="`fleet loop serve`, or `fleet agents run` then a round",
            )
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()


def _nice_width(seconds: float) -> float:
    for width in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400):
        if width >= seconds:
            return float(width)
    return 86400.0 * round(seconds / 86400 + 0.5)


def _row(ep: Episode, prov: Provenance) -> tuple:
    return (
        str(ep.episode_id),
        ep.robot_id,
        ep.task_id,
        ep.instruction,
        ep.model_versions.policy,
        ep.model_versions.world_model,
        ep.model_versions.idm,
        ep.started_at.timestamp(),
        ep.ended_at.timestamp(),
        ep.published_at.timestamp(),
        prov.ingested_at,
        int(ep.success),
        ep.success_source.value,
        len(ep.actions),
        len(ep.decisions),
        sum(ep.rejections.values()),
        prov.topic,
        prov.partition,
        prov.offset,
        ep.model_dump_json(),
    )


def _where(
    robot_id: str | None = None,
    task_id: str | None = None,
    policy_version: str | None = None,
    success: bool | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    ingested_after: float | None = None,
    ingested_until: float | None = None,
) -> tuple[str, list]:
    """`since`/`until` bound the robot's start time; `ingested_*` the learner's ingest time, the
    watermark rounds use (a robot's clock cannot make an episode old or new to the learner)."""
    clauses, args = [], []
    for column, value in (("robot_id", robot_id), ("task_id", task_id), ("policy_version", policy_version)):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    if success is not None:
        clauses.append("success = ?")
        args.append(int(success))
    if since is not None:
        clauses.append("started_at >= ?")
        args.append(since.timestamp())
    if until is not None:
        clauses.append("started_at < ?")
        args.append(until.timestamp())
    if ingested_after is not None:
        clauses.append("ingested_at > ?")
        args.append(ingested_after)
    if ingested_until is not None:
        clauses.append("ingested_at <= ?")
        args.append(ingested_until)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args
