"""Rollout events: one Kafka message per transition of a policy version, for agents and people.

An event carries the aliases as they stand after the transition, so an agent can act on the event
alone; it still resolves the version in the registry and checks the weights' digests before use.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field


class RolloutState(str, Enum):
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
    at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
