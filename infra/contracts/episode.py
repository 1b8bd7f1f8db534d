"""The episode: the contract between a robot's agent and the learner.

An episode is one attempt at one task. Its small, queryable facts travel as JSON on Kafka;
its frames and imagined videos travel as claim checks: S3 object keys with their sha256.
Both sides import this module; ``episode.schema.json`` beside it is the exported JSON Schema
(``fleet contracts export`` rewrites it, and a test keeps it in step).
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("episode.schema.json")


class SuccessSource(StrEnum):
    environment = "environment"  # the simulator's or task's own success check
    operator = "operator"  # a person labelled it


class ModelVersions(BaseModel):
    """Registry versions of each model the policy ran with ("base" before any registration)."""

    model_config = ConfigDict(extra="forbid")
    policy: str = Field(description="the registered policy version (world model + IDM + critic)")
    world_model: str
    idm: str
    critic: str | None = None


class ArraySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shape: list[int]
    dtype: str


MEDIA_ARRAYS = {
    "executed_frames": "uint8 (T, H, W, 3) camera frames as executed",
    "imagined_videos": "uint8 (D, K, F, H, W, 3): per decision, K candidate videos of F frames"
    " (after a resample, the last round's K)",
}


class MediaRef(BaseModel):
    """The claim check for an episode's media: one compressed object in S3 and its arrays."""

    model_config = ConfigDict(extra="forbid")
    bucket: str
    key: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    nbytes: int = Field(ge=0, description="compressed size")
    arrays: dict[str, ArraySpec] = Field(description="; ".join(f"{k}: {v}" for k, v in MEDIA_ARRAYS.items()))

    @field_validator("arrays")
    @classmethod
    def _has_every_array(cls, v: dict[str, ArraySpec]) -> dict[str, ArraySpec]:
        missing = set(MEDIA_ARRAYS) - set(v)
        if missing:
            raise ValueError(f"media lack {sorted(missing)}")
        return v


class CandidateRecord(BaseModel):
    """One imagined future: its evaluator score and, if rejected, why."""

    model_config = ConfigDict(extra="forbid")
    index: int = Field(ge=0)
    score: float | None = None
    rejected: bool = False
    rejection_reason: str | None = None


class Decision(BaseModel):
    """One plan-and-act decision: K imagined candidates, one chosen."""

    model_config = ConfigDict(extra="forbid")
    step: int = Field(ge=0, description="environment step at which the decision was taken")
    candidates: list[CandidateRecord]
    chosen: int | None = Field(description="index of the executed candidate; None if all were rejected")
    resamples: int = 0
    latency_ms: float = Field(ge=0)
    policy_version: str | None = Field(
        None, description="the registry version that decided; a rollout can swap models between decisions"
    )

    def stored_chosen(self, k: int) -> int | None:
        """The chosen candidate's index among the K videos stored for this decision (the media keep
        the last sampling round's K), or None when nothing was chosen or it is not among them."""
        local = None if self.chosen is None else self.chosen - self.resamples * k
        return local if local is not None and 0 <= local < k else None

    @model_validator(mode="after")
    def _chosen_exists(self) -> Decision:
        if self.chosen is not None and self.chosen not in {c.index for c in self.candidates}:
            raise ValueError(f"chosen candidate {self.chosen} is not among the candidates")
        return self


class EpisodeCore(BaseModel):
    """Everything about an episode except where its media lives."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    episode_id: UUID
    robot_id: str = Field(min_length=1, max_length=128)
    model_versions: ModelVersions
    task_id: str = Field(min_length=1)
    instruction: str
    started_at: datetime
    ended_at: datetime
    success: bool
    success_source: SuccessSource
    actions: list[list[float]] = Field(description="(T, action_dim) executed actions")
    decisions: list[Decision]
    rejections: dict[str, int] = Field(default_factory=dict, description="rejection counts by reason")
    timings_ms: dict[str, float] = Field(default_factory=dict, description="summed time per stage")
    hindsight: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict,
        description="other tasks whose success check the episode met, each with the first step it did "
        "(hindsight relabelling: the executed frames up to that step demonstrate that task)",
    )

    @field_validator("ended_at")
    @classmethod
    def _ends_after_start(cls, v: datetime, info) -> datetime:
        start = info.data.get("started_at")
        if start is not None and v < start:
            raise ValueError("ended_at is before started_at")
        return v


class Episode(EpisodeCore):
    """The message on the episodes topic: the core facts plus claim checks for the media."""

    media: MediaRef
    published_at: datetime = Field(description="when the agent handed it to the data plane")


def json_schema() -> dict:
    schema = Episode.model_json_schema()
    schema["$id"] = f"https://worldfleet.dev/schemas/episode/v{SCHEMA_VERSION}.json"
    return schema


def export_schema(path: Path = SCHEMA_PATH) -> Path:
    path.write_text(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
    return path
