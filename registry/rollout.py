"""Rollout as a state machine over registry aliases; every transition recorded and announced.

    registered --canary--> canary --promote--> champion --(next promotion)--> retired
                                  \\--end (rollback, or champion kept)--> rolled_back

Aliases: `champion` is what the fleet runs, `canary` what the canary robots run, `previous` the
champion before the last promotion (what a rollback without a canary restores).

Every transition names the version it acts on and is a compare-and-set on the registry: promoting
or ending version 7 does nothing to a canary that is now version 8, and ending a canary never
touches the champion. Aliases move first, in an order where every intermediate state is one the
fleet can run, and the states are recorded from what the aliases say; so a transition interrupted
anywhere (a kill -9, a registry error) is completed by calling it again, and calling a finished one
again only re-announces it. Events are built from the registry's state and published last (the
registry is the outbox): a failed publish loses nothing, and the retry publishes it.

Transitions are exclusive per model across processes and machines (`registry/lease.py`): with
several learners, "check that no canary runs, then set one" is one step, not a race.

Each transition appends one object to `rollout-history/<model>/` in the registry's bucket, never
rewritten (`fleet rollout history`), and the version's `rollout_state` and `rollout_history` tags
(its last transitions, for the dashboard) are set in MLflow.
"""

from __future__ import annotations

import functools
import io
import json
import threading
from datetime import UTC, datetime

from infra.clients import ServiceUnavailable, kafka_producer, s3_client, s3_read
from infra.contracts.rollout import CanaryDecision, RolloutEvent, RolloutState
from infra.errors import FleetError
from infra.settings import Settings
from registry.analysis import AnalysisConfig, Arm, Verdict, analyse
from registry.lease import RolloutLease
from registry.model_store import ModelStore, PolicyVersion

STATE_TAG, HISTORY_TAG, FRACTION_TAG = "rollout_state", "rollout_history", "canary_fraction"
HISTORY_PREFIX = "rollout-history"


class RolloutError(FleetError):
    """A transition the state machine does not allow; the message says why."""


class CorruptHistory(FleetError):
    hint = "the rollout history is append-only and only the learner writes it: find who wrote that object"


def _exclusive(transition):
    """Run a transition holding the model's rollout lease; one called from another (decide ->
    promote) runs under the lease its caller holds."""

    @functools.wraps(transition)
    def held(self: Rollout, *args, **kwargs):
        if getattr(self._held, "depth", 0):
            return transition(self, *args, **kwargs)
        with RolloutLease(self.settings, self.store.name):
            self._held.depth = 1
            try:
                return transition(self, *args, **kwargs)
            finally:
                self._held.depth = 0

    return held


class Rollout:
    def __init__(self, settings: Settings, store: ModelStore | None = None):
        self.settings = settings
        self.store = store or ModelStore(settings)
        self._producer = None
        self._held = threading.local()

    # -- transitions --------------------------------------------------------------------------
    @_exclusive
    def crown(self, version: str, reason: str = "first champion") -> RolloutEvent:
        """Make a version champion directly: the fleet's first model, or an operator's choice."""
        return self._make_champion(str(version), reason, old_state=RolloutState.retired)

    @_exclusive
    def start_canary(self, version: str, fraction: float, reason: str = "candidate from the learner") -> RolloutEvent:
        version = str(version)
        if not 0 < fraction < 1:
            raise RolloutError(f"canary fraction must be in (0, 1), got {fraction}")
        if self.store.by_alias("champion") is None:
            raise RolloutError("no champion to compare a canary with; crown a first version")
        if (running := self.store.by_alias("canary")) is not None:
            if running.version == version:  # a retry: the alias is set, the state may not be
                return self._settle(self.store.get(version), RolloutState.canary, reason, fraction)
            raise RolloutError(f"version {running.version} is already in canary; promote or roll it back first")
        if self.store.by_alias("champion").version == version:
            raise RolloutError(f"version {version} is the champion; a canary must be another version")
        self.store.tag(version, FRACTION_TAG, str(fraction))
        self.store.set_alias("canary", version)
        return self._settle(self.store.get(version), RolloutState.canary, reason, fraction)

    @_exclusive
    def promote(self, version: str | None = None, reason: str = "promoted by an operator") -> RolloutEvent:
        """Make the canary (`version`, if given, must be it) champion; the old champion becomes `previous`."""
        canary, champion = self.store.by_alias("canary"), self.store.by_alias("champion")
        version = str(version) if version is not None else (canary.version if canary else None)
        if version is None:
            raise RolloutError("no canary is running")
        finished = champion is not None and champion.version == version
        if not finished and (canary is None or canary.version != version):
            raise RolloutError(f"version {version} is not in canary (canary: {canary.version if canary else 'none'})")
        return self._make_champion(version, reason, old_state=RolloutState.retired)

    @_exclusive
    def end_canary(self, version: str, reason: str) -> RolloutEvent:
        """End version's canary without promoting it. The champion is never touched."""
        version, canary = str(version), self.store.by_alias("canary")
        if canary is None or canary.version != version:
            mv, champion = self.store.get(version), self.store.by_alias("champion")
            promoted = champion is not None and champion.version == version
            # a retry of this very transition, whether it stopped before or after recording the state
            if not promoted and self._state(mv) in (RolloutState.rolled_back, RolloutState.canary):
                return self._settle(mv, RolloutState.rolled_back, reason)
            raise RolloutError(f"version {version} is not in canary (canary: {canary.version if canary else 'none'})")
        self.store.delete_alias("canary")
        return self._settle(self.store.get(version), RolloutState.rolled_back, reason)

    @_exclusive
    def rollback(self, to: str | None = None, reason: str = "rolled back by an operator") -> RolloutEvent:
        """End the canary; with no canary running, restore `previous` (or `to`) as champion."""
        canary = self.store.by_alias("canary")
        if canary is not None and to is None:
            return self.end_canary(canary.version, reason)
        if canary is not None:
            self.end_canary(canary.version, reason)
        target = to or (p.version if (p := self.store.by_alias("previous")) else None)
        if target is None:
            raise RolloutError("no canary running and no previous champion to roll back to")
        return self._make_champion(str(target), reason, old_state=RolloutState.rolled_back)

    @_exclusive
    def decide(
        self, version: str, canary: Arm, champion: Arm, config: AnalysisConfig = AnalysisConfig(), final: bool = False
    ) -> Verdict:
        """Analyse version's live results and act on them: promote, roll back, keep the champion, or
        wait. `final` (the canary's time is up) turns "wait" into "keep"."""
        verdict = analyse(canary, champion, config, final)
        if verdict.decision == CanaryDecision.wait:
            return verdict
        self.store.tag(str(version), "canary_analysis", json.dumps(verdict.as_dict()))
        if verdict.decision == CanaryDecision.promote:
            self.promote(version, f"canary analysis: {verdict.reason}")
        else:
            self.end_canary(version, f"canary analysis: {verdict.reason}")
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
                    "state": rollout_state(v),
                    "refused": v.refused,
                    "aliases": [a for a, n in aliases.items() if n == v.version],
                    "parent": v.tags.get("parent_version", ""),
                    "dataset": v.tags.get("dataset_manifest", ""),
                    "success_rate": v.tags.get("eval.success_rate", ""),
                }
                for v in self.store.versions()
            ],
        }

    def history(self) -> list[RolloutEvent]:
        """Every transition of this model, oldest first, from the append-only log in S3."""
        s3, bucket = s3_client(self.settings), self.settings.s3.mlflow_bucket
        prefix = f"{HISTORY_PREFIX}/{self.store.name}/"
        try:
            names = sorted(o.object_name for o in s3.list_objects(bucket, prefix=prefix, recursive=True))
            stored = [(name, s3_read(s3, bucket, name)) for name in names]
        except Exception as e:  # noqa: BLE001 - minio and urllib3 raise several types for one cause
            raise ServiceUnavailable(f"S3 at {self.settings.s3_endpoint} did not list the rollout history: {e}") from e
        events = []
        for name, blob in stored:
            try:
                events.append(RolloutEvent.model_validate_json(blob))
            except ValueError as e:  # the log is the learner's alone: this object was written by someone else
                raise CorruptHistory(f"s3://{bucket}/{name} is not a rollout event ({str(e).splitlines()[0]})") from e
        return events

    # -- internals ----------------------------------------------------------------------------
    @staticmethod
    def _state(version: PolicyVersion) -> RolloutState:
        return RolloutState(version.tags.get(STATE_TAG, RolloutState.registered.value))

    def _make_champion(self, version: str, reason: str, old_state: RolloutState) -> RolloutEvent:
        """champion := version, old champion := previous and `old_state`, canary cleared if it was
        version. Each alias move is one the fleet can run; a retry picks up where one stopped."""
        self.store.get(version)  # a version that does not exist fails here, before anything moves
        champion = self.store.by_alias("champion")
        if champion is not None and champion.version != version:
            self.store.set_alias("previous", champion.version)
            self.store.set_alias("champion", version)
        elif champion is None:
            self.store.set_alias("champion", version)
        canary = self.store.by_alias("canary")
        if canary is not None and canary.version == version:
            self.store.delete_alias("canary")
        previous = self.store.by_alias("previous")
        if previous is not None and previous.version != version and self._state(previous) == RolloutState.champion:
            self._settle(previous, old_state, f"{reason}; version {version} is champion")
        return self._settle(self.store.get(version), RolloutState.champion, reason)

    def _settle(self, version: PolicyVersion, state: RolloutState, reason: str, fraction: float = 0.0) -> RolloutEvent:
        """Record that `version` is in `state` (once), then announce it from the registry's state."""
        before = self._state(version)
        if before != state:
            entry = {
                "state": state.value,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "reason": reason[:300],
            }
            history = [*history_tag_entries(version.tags.get(HISTORY_TAG)), entry]
            event = self._event(version.version, state, before, reason, fraction)
            self._append_history(event)
            self.store.tag(version.version, HISTORY_TAG, json.dumps(history[-12:]))  # MLflow caps a tag at 5,000 chars
            self.store.tag(version.version, STATE_TAG, state.value)
        else:  # already recorded: a retry re-announces it, for agents that missed the first publish
            if state == RolloutState.canary:
                fraction = float(version.tags.get(FRACTION_TAG, fraction))
            event = self._event(version.version, state, None, reason, fraction)
        self._publish(event)
        return event

    def _event(
        self, version: str, state: RolloutState, before: RolloutState | None, reason: str, fraction: float
    ) -> RolloutEvent:
        return RolloutEvent(
            model=self.store.name,
            version=version,
            state=state,
            previous_state=before,
            aliases=self.store.aliases(),
            canary_fraction=fraction,
            reason=reason,
        )

    def _append_history(self, event: RolloutEvent) -> None:
        body = event.model_dump_json().encode()
        name = f"{HISTORY_PREFIX}/{self.store.name}/{event.at:%Y%m%dT%H%M%S%f}-{event.version}-{event.state.value}.json"
        try:
            s3_client(self.settings).put_object(
                self.settings.s3.mlflow_bucket, name, io.BytesIO(body), len(body), content_type="application/json"
            )
        except Exception as e:  # noqa: BLE001 - minio and urllib3 raise several types for one cause
            raise ServiceUnavailable(
                f"S3 at {self.settings.s3_endpoint} did not take the rollout history of version {event.version} "
                f"(nothing was recorded; retry the transition): {e}"
            ) from e

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


def rollout_state(version: PolicyVersion) -> str:
    """The state an operator sees: `refused` for a version no one may load, else its recorded state."""
    return "refused" if version.refused else version.tags.get(STATE_TAG, RolloutState.registered.value)


def history_tag_entries(tag: str | None) -> list[dict]:
    """A version's rollout-history tag, its readable entries only: MLflow tags are writable by
    anyone the server lets register, and one bad tag must stop neither a transition nor the
    dashboard's rollout view."""
    try:
        entries = json.loads(tag or "[]")
    except ValueError:
        return []
    readable = []
    for h in entries if isinstance(entries, list) else ():
        try:
            datetime.fromisoformat(h["at"])
            if isinstance(h["state"], str):
                readable.append(h)
        except (TypeError, KeyError, ValueError):
            continue
    return readable
