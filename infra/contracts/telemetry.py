"""Telemetry from the agents: a heartbeat per robot, and a short summary of each episode.

Small JSON on the telemetry topic, keyed by robot_id; the dashboard and the canary analysis read
it live, while the full episode travels on the episodes topic.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Literal
from uuid import UUID

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from infra.contracts.episode import EpisodeCore


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["heartbeat"] = "heartbeat"
    robot_id: str
    policy_version: str
    episodes: int = Field(ge=0, description="episodes this robot has finished since its agent started")
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class EpisodeTelemetry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["episode"] = "episode"
    robot_id: str
    episode_id: UUID
    policy_version: str = Field(description="the version that made every decision, or 'mixed' across a swap")
    task_id: str
    success: bool
    decision_ms_p50: float
    decision_ms_p95: float
    decisions: int
    rejections: int
    candidates: int
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def of(cls, core: EpisodeCore, policy_version: str | None = None) -> EpisodeTelemetry:
        """The summary of a finished episode; `policy_version` defaults to the one it records."""
        latencies = [d.latency_ms for d in core.decisions] or [0.0]
        return cls(
            robot_id=core.robot_id,
            episode_id=core.episode_id,
            policy_version=policy_version or core.model_versions.policy,
            task_id=core.task_id,
            success=core.success,
            decision_ms_p50=round(float(np.percentile(latencies, 50)), 1),
            decision_ms_p95=round(float(np.percentile(latencies, 95)), 1),
            decisions=len(core.decisions),
            rejections=sum(core.rejections.values()),
            candidates=sum(len(d.candidates) for d in core.decisions),
        )


class ModelRefused(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["model_refused"] = "model_refused"
    robot_id: str = Field(description="'*' when the whole agent process refused it")
    version: str
    reason: str
    kept_version: str | None
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class EpisodeQuarantined(BaseModel):
    """A spooled episode no retry could ship, set aside on the robot's disk (the spool's quarantine)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["episode_quarantined"] = "episode_quarantined"
    robot_id: str = Field(description="'*' when the entry was too damaged to say")
    reason: str
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class EpisodeNotKept(BaseModel):
    """A finished episode the robot could not keep: its spool refused it (full disk, or full cap)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["episode_not_kept"] = "episode_not_kept"
    robot_id: str
    episode_id: UUID
    reason: str
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))


Telemetry = Heartbeat | EpisodeTelemetry | ModelRefused | EpisodeQuarantined | EpisodeNotKept
KINDS: dict[str, type[Telemetry]] = {
    contract.model_fields["kind"].default: contract
    for contract in (Heartbeat, EpisodeTelemetry, ModelRefused, EpisodeQuarantined, EpisodeNotKept)
}


def read_telemetry(value: bytes | None) -> Telemetry | None:
    """A telemetry record's message, checked against its kind's contract; None for a kind these
    contracts do not define (a newer agent's, which a reader passes over). `ValueError` for a
    record that is not telemetry: no value, not JSON, not an object, not its kind's contract."""
    if value is None:
        raise ValueError("the record has no value")
    message = json.loads(value)
    if not isinstance(message, dict):
        raise ValueError(f"a telemetry record is a JSON object, not {type(message).__name__}")
    kind = message.get("kind")
    if not isinstance(kind, str):
        raise ValueError(f"a telemetry record's kind is a string, not {kind!r:.40}")
    return KINDS[kind].model_validate(message) if kind in KINDS else None
