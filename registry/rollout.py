"""Rollout as a state machine over registry aliases; every transition recorded and announced.

    registered --canary--> canary --promote--> champion --(next promotion)--> retired
                                  \\--rollback--> rolled_back

Aliases: `champion` is what the fleet runs, `canary` what the canary robots run, `previous` the
champion before the last promotion (what a rollback without a canary restores). Each transition
sets the version's `rollout_state` tag, appends to its `rollout_history` tag in MLflow, and
publishes a `RolloutEvent` on the rollouts topic, on which agents swap models.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from infra.clients import ServiceUnavailable, kafka_producer
from infra.contracts.rollout import CanaryDecision, RolloutEvent, RolloutState
from infra.errors import FleetError
from infra.settings import Settings
from registry.analysis import AnalysisConfig, Arm, Verdict, analyse
from registry.model_store import ModelStore, PolicyVersion

STATE_TAG, HISTORY_TAG, FRACTION_TAG = "rollout_state", "rollout_history", "canary_fraction"


class RolloutError(FleetError):
    """A transition the state machine does not allow; the message says why."""


class Rollout:
    def __init__(self, settings: Settings, store: ModelStore | None = None):
        self.settings = settings
        self.store = store or ModelStore(settings)
        self._producer = None

    # -- transitions --------------------------------------------------------------------------
    def crown(self, version: str, reason: str = "first champion") -> RolloutEvent:
        """Make a version champion directly: the fleet's first model, or an operator's choice."""
        current = self.store.by_alias("champion")
        if current and current.version == str(version):
            raise RolloutError(f"version {version} is already champion")
        if current:
            self.store.set_alias("previous", current.version)
            self._record(current, RolloutState.retired, f"replaced by version {version}")
        self.store.set_alias("champion", str(version))
        return self._record(self.store.get(version), RolloutState.champion, reason)

    def start_canary(self, version: str, fraction: float, reason: str = "candidate from the learner") -> RolloutEvent:
        if not 0 < fraction < 1:
            raise RolloutError(f"canary fraction must be in (0, 1), got {fraction}")
        if self.store.by_alias("champion") is None:
            raise RolloutError("no champion to compare a canary with; crown a first version")
        if (running := self.store.by_alias("canary")) is not None:
            raise RolloutError(f"version {running.version} is already in canary; promote or roll it back first")
        self.store.tag(str(version), FRACTION_TAG, str(fraction))
        self.store.set_alias("canary", str(version))
        return self._record(self.store.get(version), RolloutState.canary, reason, fraction)

    def promote(self, reason: str = "promoted by an operator") -> RolloutEvent:
        canary = self._canary()
        self.store.delete_alias("canary")
        return self.crown(canary.version, reason)

    def rollback(self, to: str | None = None, reason: str = "rolled back by an operator") -> RolloutEvent:
        """End a canary; with no canary running, restore `previous` (or `to`) as champion."""
        canary = self.store.by_alias("canary")
        if canary is not None and to is None:
            self.store.delete_alias("canary")
            return self._record(canary, RolloutState.rolled_back, reason)
        champion = self.store.by_alias("champion")
        target = to or (self.store.by_alias("previous").version if self.store.by_alias("previous") else None)
        if target is None:
            raise RolloutError("no canary running and no previous champion to roll back to")
        if canary is not None:
            self.store.delete_alias("canary")
            self._record(canary, RolloutState.rolled_back, reason)
        self.store.set_alias("champion", str(target))
        if champion is not None and champion.version != str(target):
            self.store.set_alias("previous", champion.version)
            self._record(champion, RolloutState.rolled_back, f"{reason}; version {target} restored")
        return self._record(self.store.get(target), RolloutState.champion, reason)

    def decide(self, canary: Arm, champion: Arm, config: AnalysisConfig = AnalysisConfig()) -> Verdict:
        """Analyse live results and act on them: promote, roll back, or wait."""
        verdict = analyse(canary, champion, config)
        version = self._canary().version
        self.store.tag(version, "canary_analysis", json.dumps(verdict.as_dict()))
        if verdict.decision == CanaryDecision.promote:
            self.promote(f"canary analysis: {verdict.reason}")
        elif verdict.decision == CanaryDecision.rollback:
            self.rollback(reason=f"canary analysis: {verdict.reason}")
        return verdict

    # -- reading ------------------------------------------------------------------------------
    def status(self) -> dict:
        aliases = self.store.aliases()
        return {
            "model": self.store.name,
            "aliases": aliases,
            "versions": [
                {
                    "version": v.version,
                    "state": v.tags.get(STATE_TAG, RolloutState.registered.value),
                    "aliases": [a for a, n in aliases.items() if n == v.version],
                    "parent": v.tags.get("parent_version", ""),
                    "dataset": v.tags.get("dataset_manifest", ""),
                    "success_rate": v.tags.get("eval.success_rate", ""),
                }
                for v in self.store.versions()
            ],
        }

    # -- internals ----------------------------------------------------------------------------
    def _canary(self) -> PolicyVersion:
        canary = self.store.by_alias("canary")
        if canary is None:
            raise RolloutError("no canary is running")
        return canary

    def _record(self, version: PolicyVersion, state: RolloutState, reason: str, fraction: float = 0.0) -> RolloutEvent:
        previous = version.tags.get(STATE_TAG)
        event = RolloutEvent(
            model=self.store.name,
            version=version.version,
            state=state,
            previous_state=RolloutState(previous) if previous else None,
            aliases=self.store.aliases(),
            canary_fraction=fraction,
            reason=reason,
        )
        history = json.loads(version.tags.get(HISTORY_TAG, "[]"))
        history.append(
            {"state": state.value, "at": datetime.now(UTC).isoformat(timespec="seconds"), "reason": reason[:300]}
        )
        self.store.tag(version.version, STATE_TAG, state.value)
        self.store.tag(version.version, HISTORY_TAG, json.dumps(history[-12:]))  # MLflow caps a tag at 5,000 chars
        self._publish(event)
        return event

    def _publish(self, event: RolloutEvent) -> None:
        if self._producer is None:
            self._producer = kafka_producer(self.settings)
        future = self._producer.send(
            self.settings.kafka.rollouts_topic, key=event.model.encode(), value=event.model_dump_json().encode()
        )
        try:
            future.get(timeout=self.settings.kafka.bootstrap_timeout_ms / 1000)
        except Exception as e:  # noqa: BLE001 - kafka-python raises several types for one cause
            raise ServiceUnavailable(
                f"kafka at {self.settings.kafka_bootstrap} did not take rollout event {event.state.value} "
                f"of version {event.version} (the registry already holds it): {e}"
            ) from e

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
