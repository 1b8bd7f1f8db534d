"""What the dashboard reads: the learner's episode index, Kafka's telemetry and dead-letter topics,
the MLflow registry and Prefect's flow runs.

The index is a local SQLite file, queried per view (aggregates over 100,000 rows take tens of
milliseconds on its indexes). The services are read by background threads into snapshots, so a
view never waits on a slow or missing service: it shows the last snapshot, or the error that
names the service.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from infra.contracts.dead_letter import DeadLetter
from infra.contracts.telemetry import (
    EpisodeNotKept,
    EpisodeQuarantined,
    EpisodeTelemetry,
    Heartbeat,
    ModelRefused,
    read_telemetry,
)
from infra.errors import FleetError
from infra.settings import Settings
from learner.episode_index import EpisodeQueries, open_reader

log = logging.getLogger(__name__)


class SourceMissing(FleetError):
    """A source the view needs has nothing to show yet; the message says what to start."""


# -- services, read in the background ---------------------------------------------------------------
@dataclass
class Snapshot:
    """The latest reading of one service, or why there is none."""

    value: object = None
    error: str | None = None
    at: float = 0.0


class Poller:
    """Calls `read` every `every_s` seconds on a daemon thread and keeps the latest result."""

    def __init__(self, name: str, read: Callable[[], object], every_s: float, close: Callable[[], None] | None = None):
        self.name, self._read, self.every_s, self._close = name, read, every_s, close
        self.snapshot = Snapshot(error=f"{name}: still reading (the first poll has not answered yet)")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"dashboard-{name}")

    @classmethod
    def reading(cls, name: str, value: object = None, error: str | None = None) -> Poller:
        """A poller that is never started and holds one given reading: for benchmarks and tests."""
        poller = cls(name, lambda: value, every_s=3600)
        poller.snapshot = Snapshot(value, error, time.time())
        return poller

    def start(self) -> Poller:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.snapshot = Snapshot(self._read(), None, time.time())
            except Exception as e:  # noqa: BLE001 - any failure is shown, and the next poll retries
                log.info("%s: %s", self.name, e)
                self.snapshot = Snapshot(self.snapshot.value, f"{self.name}: {e}", self.snapshot.at)
            self._stop.wait(self.every_s)
        if self._close:
            self._close()  # on this thread: the client it closes is not thread-safe

    def stop(self) -> None:
        self._stop.set()


class EpisodeSummary(NamedTuple):
    """One episode's telemetry, as the dashboard keeps it (a tuple: 50,000 of them stay in memory)."""

    at: float
    version: str
    success: bool
    decision_ms_p50: float
    decision_ms_p95: float
    rejections: int
    candidates: int


@dataclass
class KafkaView:
    """Recent episode telemetry, the robots' latest heartbeats, dead-letter counts by reason, and
    the episodes robots could not ship (quarantined) or keep (spool full), by kind."""

    episodes: deque[EpisodeSummary] = field(default_factory=lambda: deque(maxlen=50_000))
    heartbeats: dict[str, dict] = field(default_factory=dict)
    refused: deque = field(default_factory=lambda: deque(maxlen=200))
    dead_letters: Counter = field(default_factory=Counter)
    lost_on_robots: Counter = field(default_factory=Counter)
    last_loss: dict | None = None
    unreadable: int = 0  # records on the telemetry topic that are not telemetry: skipped


class KafkaTail:
    """Tails the telemetry topic (from `window_s` ago) and the dead-letter topic (from its start)."""

    def __init__(self, settings: Settings, window_s: float = 24 * 3600):
        self.settings, self.window_s = settings, window_s
        self.view = KafkaView()
        self._consumer = None

    def read(self) -> KafkaView:
        from kafka import TopicPartition

        from infra.clients import kafka_consumer, seek_since

        k = self.settings.kafka
        if self._consumer is None:
            consumer = kafka_consumer(self.settings, group_id=None, enable_auto_commit=False)
            parts = [
                TopicPartition(topic, p)
                for topic in (k.telemetry_topic, k.dead_letter_topic)
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            if not parts:
                consumer.close()
                raise SourceMissing(f"kafka at {self.settings.kafka_bootstrap} has no topic {k.telemetry_topic} yet")
            consumer.assign(parts)
            telemetry = [tp for tp in parts if tp.topic == k.telemetry_topic]
            seek_since(self.settings, consumer, telemetry, time.time() - self.window_s)
            consumer.seek_to_beginning(*[tp for tp in parts if tp.topic == k.dead_letter_topic])
            self._consumer = consumer
        for batch in self._consumer.poll(timeout_ms=200, max_records=20_000).values():
            self.take(batch)
        return self.view

    def take(self, records) -> None:
        """Fold polled records into the view. One that is not telemetry (not JSON, not an object,
        not its kind's contract) is counted in `unreadable` and skipped: before, it ended the
        poll, and the records polled after it never reached the view."""
        for record in records:
            try:
                self._take(record)
            except (TypeError, ValueError, AttributeError) as e:  # pydantic's ValidationError is a ValueError
                self.view.unreadable += 1
                log.warning("dashboard skipped %s[%d]@%d: %s", record.topic, record.partition, record.offset, e)

    def _take(self, record) -> None:
        if record.topic == self.settings.kafka.dead_letter_topic:
            self.view.dead_letters[DeadLetter.from_headers(record.headers).reason.value] += 1
            return
        t = read_telemetry(record.value)
        if isinstance(t, EpisodeTelemetry):
            self.view.episodes.append(
                EpisodeSummary(
                    t.at.timestamp(),
                    t.policy_version,
                    t.success,
                    t.decision_ms_p50,
                    t.decision_ms_p95,
                    t.rejections,
                    t.candidates,
                )
            )
        elif isinstance(t, Heartbeat):
            self.view.heartbeats[t.robot_id] = t.model_dump(mode="json")
        elif isinstance(t, ModelRefused):
            self.view.refused.append(t.model_dump(mode="json"))
        elif isinstance(t, EpisodeNotKept | EpisodeQuarantined):
            self.view.lost_on_robots[t.kind] += 1
            self.view.last_loss = t.model_dump(mode="json")
        # None: another kind of record than these views show

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


@dataclass(frozen=True)
class VersionInfo:
    version: str
    state: str
    aliases: tuple[str, ...]
    history: list[dict]  # [{"state", "at", "reason"}]
    tags: dict[str, str]


def read_registry(settings: Settings) -> dict:
    """Every version with its rollout history and tags, and the aliases."""
    from registry.model_store import ModelStore
    from registry.rollout import HISTORY_TAG, history_tag_entries, rollout_state

    store = ModelStore(settings)
    aliases = store.aliases()
    versions = [
        VersionInfo(
            v.version,
            rollout_state(v),
            tuple(a for a, n in aliases.items() if n == v.version),
            history_tag_entries(v.tags.get(HISTORY_TAG)),
            dict(v.tags),
        )
        for v in store.versions()
    ]
    return {"aliases": aliases, "versions": versions}


def read_flow_runs(settings: Settings, limit: int = 30) -> list[dict]:
    """The latest Prefect flow runs about this model (id, name, flow, state, start), by their
    tag (RegistrySettings.flow_run_tag), from Prefect's REST API: its Python client follows
    process-wide settings, and would start a server of its own if they named none."""
    import httpx

    from infra.clients import unavailable

    api = settings.prefect_api_url.rstrip("/")
    try:
        mine = {"tags": {"all_": [settings.registry.flow_run_tag]}}
        runs = (
            httpx.post(
                f"{api}/flow_runs/filter",
                json={"limit": limit, "sort": "START_TIME_DESC", "flow_runs": mine},
                timeout=10,
            )
            .raise_for_status()
            .json()
        )
        ids = sorted({r["flow_id"] for r in runs})
        flows = httpx.post(f"{api}/flows/filter", json={"flows": {"id": {"any_": ids}}}, timeout=10) if ids else None
        names = {f["id"]: f["name"] for f in flows.raise_for_status().json()} if flows else {}
    except httpx.HTTPError as e:
        raise unavailable(settings, "prefect", str(e)) from e
    return [
        {
            "id": r["id"],
            "name": r["name"],
            "flow": names.get(r["flow_id"], "?"),
            "state": r.get("state_name") or "",
            "start": (r.get("start_time") or "")[:19],
        }
        for r in runs
    ]


@dataclass
class Sources:
    """Everything the views read, started together and stopped together."""

    settings: Settings
    index: EpisodeQueries
    kafka: Poller
    registry: Poller
    prefect: Poller

    @classmethod
    def start(cls, settings: Settings, poll_s: float = 3.0) -> Sources:
        tail = KafkaTail(settings)
        return cls(
            settings,
            open_reader(settings),
            Poller("kafka", tail.read, poll_s, tail.close).start(),
            Poller("mlflow", lambda: read_registry(settings), poll_s * 2).start(),
            Poller("prefect", lambda: read_flow_runs(settings), poll_s * 3).start(),
        )

    def poller(self, name: str) -> Poller:
        return {"kafka": self.kafka, "mlflow": self.registry, "prefect": self.prefect}[name]

    def mlflow_ui(self, version: str | None = None) -> str:
        base = self.settings.mlflow_tracking_uri.rstrip("/")
        name = self.settings.registry.model_name
        return f"{base}/#/models/{name}/versions/{version}" if version else f"{base}/#/models/{name}"

    def prefect_ui(self, flow_run_id: str | None = None) -> str:
        base = self.settings.prefect_api_url.rstrip("/").removesuffix("/api")
        return f"{base}/runs/flow-run/{flow_run_id}" if flow_run_id else f"{base}/runs"

    def stop(self) -> None:
        for poller in (self.kafka, self.registry, self.prefect):
            poller.stop()


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")
