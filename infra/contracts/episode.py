"""The episode: the contract between a robot's agent and the learner.

An episode is one attempt at one task. Its small, queryable facts travel as JSON on Kafka;
its frames and imagined videos travel as claim checks: S3 object keys with their sha256.
Both sides import this module; ``episode.schema.json`` beside it is the exported JSON Schema
(``fleet contracts export`` rewrites it, and a test keeps it in step).
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from uuid import UUID

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from infra.contracts import arrays

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("episode.schema.json")

# Every message comes from a robot: the learner trusts none of it. Numbers are finite (JSON's NaN
# and Infinity would be written as null in the index, where the row then fails to load), and every
# string, list and map has a bound, so that one message cannot make the learner build gigabytes.
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
MAX_STEPS = 10_000  # executed actions, and decisions, per episode
MAX_CANDIDATES = 256
MAX_ACTION_DIM = 64
MAX_ENTRIES = 256  # keys of the rejection, timing and hindsight maps
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:+-]*$")]
Text = Annotated[str, Field(max_length=2_000, pattern=r"^[^\x00]*$")]  # PostgreSQL text holds no NUL
# S3's bucket naming rules; the learner also checks it is the configured bucket.
BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
# A key is plain path segments under the robot's own prefix (checked in `Episode`): no "..", no
# empty segment, no control or unicode characters that S3 clients and consoles read differently.
KEY = r"^episodes/([A-Za-z0-9_][A-Za-z0-9._+-]*/)+[A-Za-z0-9_][A-Za-z0-9._+-]*$"


class SuccessSource(StrEnum):
    environment = "environment"  # the simulator's or task's own success check
    operator = "operator"  # a person labelled it


class ModelVersions(BaseModel):
    """Registry versions of each model the policy ran with ("base" before any registration)."""

    model_config = STRICT
    policy: Name = Field(description="the registered policy version (world model + IDM + critic)")
    world_model: Name
    idm: Name
    critic: Name | None = None


class ArraySpec(BaseModel):
    model_config = STRICT
    shape: list[Annotated[int, Field(ge=0, le=1 << 24)]] = Field(max_length=8)
    dtype: Literal[tuple(sorted(arrays.ALLOWED_DTYPES))]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


MEDIA_ARRAYS = {
    "executed_frames": "uint8 (T, H, W, 3) camera frames as executed",
    "imagined_videos": "uint8 (D, K, F, H, W, 3): per decision, K candidate videos of F frames"
    " (after a resample, the last round's K)",
}


class MediaRef(BaseModel):
    """The claim check for an episode's media: `nbytes` bytes at `offset` of one S3 object, and the
    arrays they hold. A robot that ships a backlog packs its episodes' media into one object (one
    S3 request each way instead of one per episode), so an object can hold several episodes."""

    model_config = STRICT
    bucket: str = Field(pattern=BUCKET)
    key: str = Field(max_length=512, pattern=KEY)
    offset: int = Field(0, ge=0, le=1 << 40, description="where the episode's bytes start in the object")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="of the episode's nbytes bytes")
    nbytes: int = Field(ge=0, description="compressed size")
    arrays: dict[str, ArraySpec] = Field(description="; ".join(f"{k}: {v}" for k, v in MEDIA_ARRAYS.items()))

    @field_validator("arrays")
    @classmethod
    def _has_exactly_the_arrays(cls, v: dict[str, ArraySpec]) -> dict[str, ArraySpec]:
        if set(v) != set(MEDIA_ARRAYS):
            raise ValueError(f"media hold {sorted(v)}, the contract names {sorted(MEDIA_ARRAYS)}")
        return v

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}" + (f"@{self.offset}" if self.offset else "")

    @property
    def end(self) -> int:
        return self.offset + self.nbytes

    @property
    def decoded_nbytes(self) -> int:
        return sum(spec.nbytes for spec in self.arrays.values())


class CandidateRecord(BaseModel):
    """One imagined future: its evaluator score and, if rejected, why."""

    model_config = STRICT
    index: int = Field(ge=0)
    score: float | None = None
    rejected: bool = False
    rejection_reason: Text | None = None


class Decision(BaseModel):
    """One plan-and-act decision: K imagined candidates, one chosen."""

    model_config = STRICT
    step: int = Field(ge=0, description="environment step at which the decision was taken")
    candidates: list[CandidateRecord] = Field(max_length=MAX_CANDIDATES)
    chosen: int | None = Field(description="index of the executed candidate; None if all were rejected")
    resamples: int = Field(0, ge=0, le=MAX_CANDIDATES)
    latency_ms: float = Field(ge=0)
    policy_version: Name | None = Field(
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

    model_config = STRICT

    schema_version: Literal[1] = SCHEMA_VERSION
    episode_id: UUID
    robot_id: Name
    model_versions: ModelVersions
    task_id: Name
    instruction: Text
    started_at: datetime
    ended_at: datetime
    success: bool
    success_source: SuccessSource
    actions: list[Annotated[list[float], Field(max_length=MAX_ACTION_DIM)]] = Field(
        max_length=MAX_STEPS, description="(T, action_dim) executed actions"
    )
    decisions: list[Decision] = Field(max_length=MAX_STEPS)
    rejections: dict[Name, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, max_length=MAX_ENTRIES, description="rejection counts by reason"
    )
    timings_ms: dict[Name, float] = Field(
        default_factory=dict, max_length=MAX_ENTRIES, description="summed time per stage"
    )
    hindsight: dict[Name, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict,
        max_length=MAX_ENTRIES,
        description="other tasks whose success check the episode met, each with the first step it did "
        "(hindsight relabelling: the executed frames up to that step demonstrate that task)",
    )

    def media_key(self) -> str:
        """Where the robot puts this episode's media: under its own prefix, by day."""
        return f"episodes/{self.robot_id}/{self.started_at:%Y/%m/%d}/{self.episode_id}{arrays.SUFFIX}"

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

    @model_validator(mode="after")
    def _media_under_the_robots_prefix(self) -> Episode:
        # a robot may name only its own objects: not another robot's, not the learner's
        if not self.media.key.startswith(f"episodes/{self.robot_id}/"):
            raise ValueError(f"media key {self.media.key!r} is not under episodes/{self.robot_id}/")
        return self


def json_schema() -> dict:
    schema = Episode.model_json_schema()
    schema["$id"] = f"https://worldfleet.dev/schemas/episode/v{SCHEMA_VERSION}.json"
    return schema


def export_schema(path: Path = SCHEMA_PATH) -> Path:
    path.write_text(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
    return path
