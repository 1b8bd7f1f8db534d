"""Rollout events: one Kafka message per transition of a policy version, for agents and people.

An event carries the aliases as they stand after the transition, so an agent can act on the event
alone; it still resolves the version in the registry and checks the weights' digests before use.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field


class RolloutState(StrEnum):
    registered = "registered"
    canary = "canary"
    champion = "champion"  # promoted, and still what the fleet runs
    retired = "retired"  # a former champion
    rolled_back = "rolled_back"


class RolloutEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: UUID = Field(default_factory=uuid4)
    model: str
    version: str
    state: RolloutState
    previous_state: RolloutState | None = None
    aliases: dict[str, str] = Field(description="alias -> version after the transition")
    canary_fraction: float = Field(0.0, ge=0, le=1, description="share of robots that run the canary")
    reason: str = ""
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class CanaryDecision(StrEnum):
    """The canary analysis' verdict on live telemetry."""

    wait = "wait"
    promote = "promote"  # shown not worse than the champion by more than the margin
    rollback = "rollback"  # shown worse, or failed the guardrail
    keep = "keep"  # could not tell in the time given: the champion stays, the canary ends


class RoundDecision(StrEnum):
    """What an improvement round did with its candidate (the past tense of the canary's verdict)."""

    baseline = "baseline"  # the demo's round 0: no candidate, the base champion measured
    skipped = "skipped"  # nothing to learn from: no candidate was trained
    promoted = "promoted"
    rolled_back = "rolled_back"
    kept = "kept"  # the canary could not be told apart from the champion, which stays

    @classmethod
    def after(cls, verdict: CanaryDecision) -> RoundDecision:
        return {
            CanaryDecision.promote: cls.promoted,
            CanaryDecision.rollback: cls.rolled_back,
            CanaryDecision.keep: cls.kept,
        }[CanaryDecision(verdict)]
