"""The episode index on PostgreSQL: one index that several learners write and any reader reads.

The tables and queries are those of `learner/episode_index.py`; this module supplies the
connection and what PostgreSQL spells differently. Each run (`Settings.isolated`) gets its own
schema, so tests and benchmarks can share one server. A learner's batch is one transaction, as in
SQLite: its episodes and their dedupe keys commit together, before the Kafka offsets do, and a
second learner's insert of the same episode id waits for the first and then does nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator

import psycopg
from psycopg import errors as pg_errors

from infra.clients import unavailable
from infra.contracts.episode import Episode
from infra.settings import Settings
from learner.episode_index import INSERT, SCHEMA, EpisodeWriter, IndexMissing, Provenance, _row

# Two learners starting at once would race on CREATE TABLE IF NOT EXISTS (it is not atomic in
# PostgreSQL); the first takes this transaction lock and the second then finds the tables made.
_SCHEMA_LOCK = 0x776F726C64666C74  # "worldflt"
_RECORD_LOCK = _SCHEMA_LOCK + 1


class PostgresIndex(EpisodeWriter):
    """Writer and reader in one: the dashboard opens it with `create=False`."""

    latest_version_sql = "(ARRAY_AGG(policy_version ORDER BY ended_at DESC))[1]"
    bucket_sql = "FLOOR({x} / {width}) * {width}"

    def __init__(self, settings: Settings, create: bool = True):
        self._settings = settings
        self.where = f"{settings.index_where} (schema {settings.learner.index_schema})"
        self._lock = threading.Lock()  # one connection, shared by the threads of a learner or a dashboard
        self._db: psycopg.Connection | None = None
        self._closed = False
        if create:
            self._create()

    def _connection(self) -> psycopg.Connection:
        """The open connection, or a new one after the server dropped the last (restart, failover)."""
        if self._closed:
            raise psycopg.InterfaceError(f"the episode index on {self.where} was closed")
        if self._db is None or self._db.closed or self._db.broken:
            schema = self._settings.learner.index_schema
            try:
                self._db = psycopg.connect(
                    self._settings.index_url,
                    autocommit=True,
                    connect_timeout=10,
                    options=f"-c search_path={schema}",
                    application_name="worldfleet",
                )
            except psycopg.OperationalError as e:
                raise unavailable(self._settings, "postgres", _first_line(e)) from e
        return self._db

    def _create(self) -> None:
        schema = self._settings.learner.index_schema
        with self._lock, self._errors():
            db = self._connection()
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                db.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")  # the name is pattern-checked in settings
                db.execute(SCHEMA)
                if db.execute("SELECT to_regclass('rollup_key')").fetchone()[0] is None:
                    for statement in self.rollup_setup():
                        db.execute(statement)

    def trigger_ddl(self) -> list[str]:
        body = ";\n".join(self.rollup_upserts())
        schema = self._settings.learner.index_schema
        return [
            # its own search_path: the trigger counts into this schema's rollups whoever inserts
            f"CREATE FUNCTION episodes_rollup() RETURNS trigger LANGUAGE plpgsql SET search_path = {schema} AS $$\n"
            f"BEGIN\n{body};\nRETURN NULL;\nEND $$",
            "CREATE TRIGGER episodes_rollup AFTER INSERT ON episodes FOR EACH ROW EXECUTE FUNCTION episodes_rollup()",
        ]

    def _rows(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        with self._lock, self._errors():
            return self._connection().execute(sql.replace("?", "%s"), args).fetchall()

    def record(self, batch: Iterable[tuple[Episode, Provenance]]) -> tuple[int, int]:
        rows = [_row(ep, prov) for ep, prov in batch]
        if not rows:
            return 0, 0
        with self._lock, self._errors():
            db = self._connection()
            with db.transaction(), db.cursor() as cursor:
                # Learners take turns to commit: each batch updates shared rollup rows (a task's, a
                # version's) in its own order, and two doing so at once could deadlock.
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_RECORD_LOCK,))
                cursor.executemany(INSERT.replace("?", "%s"), rows)
                inserted = cursor.rowcount  # psycopg sums it over the batch
        return inserted, len(rows) - inserted

    def close(self) -> None:
        self._closed = True
        if self._db is not None:
            self._db.close()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """A missing table reads as a missing index; a server that cannot be reached names itself."""
        try:
            yield
        except pg_errors.UndefinedTable as e:
            raise IndexMissing(
                f"no episode index in {self.where} yet: the learner creates it when it starts",
                hint="`fleet loop serve`, or `fleet agents run` then a round",
            ) from e
        except psycopg.OperationalError as e:
            raise unavailable(self._settings, "postgres", _first_line(e)) from e


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
