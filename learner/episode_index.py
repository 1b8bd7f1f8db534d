"""The learner's episode index: every accepted episode, queryable, surviving restarts.

Two stores behind one query layer. SQLite in WAL mode is the default: a single file beside the
learner, transactional (an episode and its dedupe key commit together, before the Kafka offset
does), able to serve hundreds of thousands of rows to a dashboard without a server to run; one
learner writes, any number of readers read. PostgreSQL (`learner/episode_index_postgres.py`,
chosen by `learner.index_url`) is for several learners sharing one index, or an index that
outgrows a file on one machine.

The read queries are one layer (`EpisodeQueries`), written once in the SQL both understand, with
the two expressions they spell differently as class attributes. `open_index` gives the learner its
writer, `open_reader` the dashboard and the CLI a reader, for whichever store is configured.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from infra.clients import ServiceUnavailable
from infra.contracts.episode import Episode
from infra.errors import FleetError
from infra.settings import Settings

SCHEMA = """
CREATE TABLE IF NOT EXISTS episodes (
    episode_id TEXT PRIMARY KEY,
    robot_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    instruction TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    world_model_version TEXT NOT NULL,
    idm_version TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    ended_at DOUBLE PRECISION NOT NULL,
    published_at DOUBLE PRECISION NOT NULL,
    ingested_at DOUBLE PRECISION NOT NULL,
    success INTEGER NOT NULL,
    success_source TEXT NOT NULL,
    n_steps INTEGER NOT NULL,
    n_decisions INTEGER NOT NULL,
    n_rejections INTEGER NOT NULL,
    source_topic TEXT,
    source_partition INTEGER,
    source_offset BIGINT,
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


# Rollups, counted by an insert trigger in the same transaction as the episode (a dropped duplicate
# fires nothing): the dashboard's aggregates read thousands of rollup rows, not millions of episodes.
ROLLUP_S = 10  # the timeline's finest bucket; every width it draws is a multiple of it
ROLLUP_KEYS = ("robot_id", "task_id", "policy_version")
ROLLUP_TABLES = """
CREATE TABLE rollup_time (
    bucket BIGINT NOT NULL,
    policy_version TEXT NOT NULL,
    episodes BIGINT NOT NULL,
    successes BIGINT NOT NULL,
    PRIMARY KEY (bucket, policy_version)
);
CREATE TABLE rollup_key (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    episodes BIGINT NOT NULL,
    successes BIGINT NOT NULL,
    last_ended_at DOUBLE PRECISION NOT NULL,
    last_version TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
"""
# Both stores run these upserts as written (the old row's values on the right of every SET).
_COUNT_TIME = """INSERT INTO rollup_time VALUES ({bucket}, NEW.policy_version, 1, NEW.success)
    ON CONFLICT (bucket, policy_version) DO UPDATE SET
    episodes = rollup_time.episodes + 1, successes = rollup_time.successes + excluded.successes"""
_COUNT_KEY = """INSERT INTO rollup_key VALUES ('{kind}', NEW.{kind}, 1, NEW.success, NEW.ended_at, NEW.policy_version)
    ON CONFLICT (kind, key) DO UPDATE SET
    episodes = rollup_key.episodes + 1, successes = rollup_key.successes + excluded.successes,
    last_version = CASE WHEN excluded.last_ended_at >= rollup_key.last_ended_at
                   THEN excluded.last_version ELSE rollup_key.last_version END,
    last_ended_at = CASE WHEN excluded.last_ended_at >= rollup_key.last_ended_at
                    THEN excluded.last_ended_at ELSE rollup_key.last_ended_at END"""

# Both stores take this; a second learner's insert of the same episode waits, then does nothing.
INSERT = f"INSERT INTO episodes VALUES ({','.join('?' * 20)}) ON CONFLICT (episode_id) DO NOTHING"


class EpisodeQueries:
    """The questions asked of the index, over `_rows(sql, args)`, which each store provides
    (`?` placeholders; the PostgreSQL store translates them)."""

    where: str  # the file or the server, for messages
    # SQLite takes a bare column from the row that holds the group's MAX(); PostgreSQL says so.
    latest_version_sql = "policy_version"
    # A time bucket: SQLite's CAST truncates (times are positive); PostgreSQL's would round.
    bucket_sql = "CAST({x} / {width} AS INTEGER) * {width}"

    def count(self, **filters) -> int:
        if not filters:  # the whole index: from the rollups, not a scan of every row
            sql = "SELECT CAST(COALESCE(SUM(episodes), 0) AS BIGINT) FROM rollup_key WHERE kind = 'policy_version'"
            return self._rows(sql)[0][0]
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
        return self._rows(
            "SELECT key, episodes, successes, last_ended_at, last_version FROM rollup_key WHERE kind = ? ORDER BY key",
            (by,),
        )

    def success_timeline(self, buckets: int = 60) -> tuple[float, list[tuple[float, str, int, int]]]:
        """(bucket width s, [(bucket start, policy version, episodes, successes)]) over the whole
        history; an episode counts in the bucket it started in."""
        first, last = self._rows("SELECT MIN(started_at), MAX(started_at) FROM episodes")[0]
        if first is None:
            return 0.0, []
        width = _nice_width(max(last - first, 1.0) / buckets)
        bucket = self.bucket_sql.format(x="bucket", width="?")
        rows = self._rows(
            f"SELECT {bucket}, policy_version, SUM(episodes), SUM(successes) FROM rollup_time GROUP BY 1, 2 ORDER BY 1, 2",
            (width, width),
        )
        return width, [(float(start), version, int(n), int(s)) for start, version, n, s in rows]

    def latest(self, limit: int = 200) -> list[tuple]:
        """The latest episodes: (id, robot, task, version, ended_at, success, steps, decisions, rejections)."""
        return self._rows(
            "SELECT episode_id, robot_id, task_id, policy_version, ended_at, success, n_steps, n_decisions, "
            "n_rejections FROM episodes ORDER BY started_at DESC LIMIT ?",
            (limit,),
        )


class EpisodeWriter(EpisodeQueries):
    """What the learner writes through: a context manager, so that it is closed on every path."""

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def record(self, batch: Iterable[tuple[Episode, Provenance]]) -> tuple[int, int]:
        """Insert a batch in one transaction; returns (inserted, duplicates dropped)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def trigger_ddl(self) -> list[str]:
        """The insert trigger that runs `rollup_upserts`, in the store's own dialect."""
        raise NotImplementedError

    def rollup_setup(self) -> list[str]:
        """Rollup tables, their trigger and their backfill: run once, in one transaction, by the
        writer that finds no rollups (a new index, or one made before they existed)."""
        return [s for s in ROLLUP_TABLES.split(";") if s.strip()] + self.trigger_ddl() + self.rollup_backfill()

    def rollup_upserts(self) -> list[str]:
        """What the insert trigger runs for one new row, NEW."""
        bucket = self.bucket_sql.format(x="NEW.started_at", width=ROLLUP_S)
        return [_COUNT_TIME.format(bucket=bucket)] + [_COUNT_KEY.format(kind=k) for k in ROLLUP_KEYS]

    def rollup_backfill(self) -> list[str]:
        """The rollups of the rows already there: an index made before rollups existed."""
        bucket = self.bucket_sql.format(x="started_at", width=ROLLUP_S)
        return [
            f"INSERT INTO rollup_time SELECT {bucket}, policy_version, COUNT(*), SUM(success) FROM episodes GROUP BY 1, 2"
        ] + [
            f"INSERT INTO rollup_key SELECT '{k}', {k}, COUNT(*), SUM(success), MAX(ended_at), "
            f"{self.latest_version_sql} FROM episodes GROUP BY {k}"
            for k in ROLLUP_KEYS
        ]

    def _rows(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        raise NotImplementedError


class EpisodeIndex(EpisodeWriter):
    """The learner's SQLite index: the one writer."""

    def __init__(self, path: Path):
        self.path = path
        self.where = str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a process crash; only an OS crash can lose the
        # last transactions, and those offsets were not committed either, so Kafka redelivers.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if not self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'rollup_key'").fetchone():
                for statement in self.rollup_setup():
                    self._db.execute(statement)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def trigger_ddl(self) -> list[str]:
        body = ";\n".join(self.rollup_upserts())
        return [f"CREATE TRIGGER episodes_rollup AFTER INSERT ON episodes BEGIN\n{body};\nEND"]

    def _rows(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        return self._db.execute(sql, args).fetchall()

    def record(self, batch: Iterable[tuple[Episode, Provenance]]) -> tuple[int, int]:
        rows = [_row(ep, prov) for ep, prov in batch]
        if not rows:
            return 0, 0
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:  # another process writes this file: the batch waits and retries
            if "locked" not in str(e):
                raise
            raise ServiceUnavailable(
                f"the SQLite index {self.path} is locked by another writer ({e}); the batch will be retried",
                hint="several learners need a PostgreSQL index: set FLEET_LEARNER__INDEX_URL",
            ) from e
        try:
            # rowcount sums each insert's own changes: a dropped duplicate is 0, the trigger's upserts are not counted
            inserted = self._db.executemany(INSERT, rows).rowcount
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return inserted, len(rows) - inserted

    def close(self) -> None:
        self._db.close()


class IndexReader(EpisodeQueries):
    """Read-only, one connection per query: SQLite's WAL lets it read while the learner writes."""

    def __init__(self, path: Path):
        self.path = path
        self.where = str(path)

    def _rows(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        if not self.path.exists():
            raise IndexMissing(
                f"no episode index at {self.path} yet: the learner creates it when it ingests its first episode",
                hint="`fleet loop serve`, or `fleet agents run` then a round",
            )
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" not in str(e):
                raise
            raise IndexMissing(  # an index from before the rollups, whose learner has not started since
                f"the episode index at {self.path} has no {str(e).rsplit(' ', 1)[-1]} table yet",
                hint="start the learner once (`fleet episodes ingest`, `fleet loop serve`): it builds it",
            ) from e
        finally:
            db.close()


def open_index(settings: Settings) -> EpisodeWriter:
    """The learner's writer for the configured store (a context manager)."""
    if settings.index_url is None:
        return EpisodeIndex(settings.index_path)
    from learner.episode_index_postgres import PostgresIndex

    return PostgresIndex(settings)


def open_reader(settings: Settings) -> EpisodeQueries:
    """A reader for the dashboard and the CLI: it never creates the index."""
    if settings.index_url is None:
        return IndexReader(settings.index_path)
    from learner.episode_index_postgres import PostgresIndex

    return PostgresIndex(settings, create=False)


def _nice_width(seconds: float) -> float:
    for width in (10, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400):  # multiples of ROLLUP_S
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
