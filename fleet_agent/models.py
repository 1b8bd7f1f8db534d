"""Which policy version each robot of this process runs, kept current by rollout events.

The registry's aliases decide: every robot runs `champion`, except a `canary_fraction` of them
that run `canary`. Each robot decides alone: it is a canary when a hash of its id and the version,
read as a number in [0, 1), falls under the fraction. So the fleet's canary share is the fraction
however the robots are split among processes (one robot per process included), every process
agrees without talking, and no robot is always the guinea pig. A version is fetched, checked against the sha256 the registry
recorded, and loaded before any robot is pointed at it; a version that fails the check is refused
and reported, and the robots keep the model they have.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable

from pydantic import ValidationError

from infra.clients import ServiceUnavailable, kafka_consumer
from infra.contracts.rollout import RolloutEvent
from infra.settings import Settings
from registry.model_store import ModelStore, NoChampion, TamperedModel
from registry.rollout import FRACTION_TAG
from worldmodel.policy import WorldModelPolicy

log = logging.getLogger(__name__)


def canary_robots(robot_ids: list[str], version: str, fraction: float) -> set[str]:
    """The robots among `robot_ids` whose hash with `version` falls under `fraction`."""
    return {r for r in robot_ids if _unit_hash(f"{version}/{r}") < fraction}


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


class FleetModels:
    def __init__(
        self,
        settings: Settings,
        robot_ids: list[str],
        store: ModelStore | None = None,
        on_refused: Callable[[str, str, str | None], None] | None = None,
    ):
        self.settings, self.robot_ids = settings, robot_ids
        self.store = store or ModelStore(settings)
        self.on_refused = on_refused or (lambda version, reason, kept: None)
        self._policies: dict[str, WorldModelPolicy] = {}
        self._assignment: dict[str, str] = {}
        self._changed_at: dict[str, float] = {}  # robot -> when its assignment last changed (event time)
        self._refused: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh()
        if not self._assignment:
            raise NoChampion(
                f"the registry has no champion for {self.store.name}: register one with "
                "`fleet rollout register --policy DIR --crown`"
            )

    # -- for the robots -----------------------------------------------------------------------
    def version_for(self, robot_id: str) -> str:
        with self._lock:
            return self._assignment[robot_id]

    def policy(self, version: str) -> WorldModelPolicy:
        with self._lock:
            return self._policies[version]

    def changed_at(self, robot_id: str) -> float | None:
        return self._changed_at.get(robot_id)

    # -- keeping current ----------------------------------------------------------------------
    def refresh(self, event_at: float | None = None) -> None:
        """Read the aliases, load what is new and verified, then repoint robots (never to a refused version)."""
        aliases = self.store.aliases()
        champion, canary = aliases.get("champion"), aliases.get("canary")
        fraction = float(self.store.get(canary).tags.get(FRACTION_TAG, 0)) if canary else 0.0
        for version in (v for v in (champion, canary) if v):  # the champion first: it is the fallback
            self._ensure_loaded(version, fallback=champion)
        with self._lock:
            current = dict(self._assignment)
        canaries = canary_robots(self.robot_ids, canary, fraction) if canary in self._policies else set()
        wanted = {}
        for robot in self.robot_ids:
            target = canary if robot in canaries else champion
            wanted[robot] = target if target in self._policies else current.get(robot)
        when = event_at if event_at is not None else time.time()
        for robot, version in wanted.items():
            if version != current.get(robot):
                self._changed_at[robot] = when
        with self._lock:
            self._assignment = {r: v for r, v in wanted.items() if v is not None}
            for version in list(self._policies):  # free what no robot runs any more
                if version not in self._assignment.values() and version not in (champion, canary):
                    del self._policies[version]

    def _ensure_loaded(self, version: str, fallback: str | None) -> None:
        if version in self._policies or version in self._refused:
            return
        try:
            policy = self.store.load(self.store.get(version))
        except TamperedModel as e:
            self._refused.add(version)
            kept = sorted(set(self._assignment.values())) or [v for v in (fallback,) if v in self._policies]
            log.error("refused version %s: %s; robots keep %s", version, e, kept)
            self.on_refused(version, str(e), ",".join(kept) or None)
            return
        with self._lock:
            self._policies[version] = policy

    def start(self) -> None:
        """Follow rollout events on Kafka (and poll the registry now and then) in the background."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._follow, name="rollout-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _follow(self) -> None:
        consumer, caught_up = None, False
        last_poll = time.monotonic()
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = kafka_consumer(
                        self.settings, self.settings.kafka.rollouts_topic, group_id=None, auto_offset_reset="latest"
                    )
                batches = consumer.poll(timeout_ms=200)
                events = rollout_events(self.store.name, (m for msgs in batches.values() for m in msgs))
                if events:
                    self.refresh(event_at=max(e.at for e in events).timestamp())
                elif not caught_up:  # partitions are assigned on the first poll: catch what came before
                    self.refresh()
                    caught_up = True
                elif time.monotonic() - last_poll > self.settings.agent.registry_poll_s:
                    self.refresh()
                    last_poll = time.monotonic()
            except ServiceUnavailable as e:
                log.warning("rollouts: %s; robots keep their models", e)
                self._stop.wait(2.0)
            except Exception:  # noqa: BLE001 - a bad event must not stop the follower
                log.exception("rollout follower error; robots keep their models")
                self._stop.wait(1.0)
        if consumer is not None:
            consumer.close()


def rollout_events(model: str, records: Iterable) -> list[RolloutEvent]:
    """`model`'s rollout events among Kafka `records`. A record that is not an event is logged and
    skipped: the good events polled with it still act at once, not at the next registry poll."""
    events = []
    for record in records:
        try:
            event = RolloutEvent.model_validate_json(record.value)
        except ValidationError as e:
            where = f"{record.topic}[{record.partition}]@{record.offset}"
            log.warning("skipped %s, not a rollout event: %s", where, e.errors()[0]["msg"])
            continue
        if event.model == model:
            events.append(event)
    return events
