"""What an improvement round reports, and the demo's row of fleet success per round."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from infra.contracts.evaluation import EvaluationReport
from infra.contracts.rollout import RoundDecision


class RoundReport(BaseModel):
    """One `improvement_round`: what it ingested and curated, and what it did with its candidate."""

    model_config = ConfigDict(extra="forbid")

    round: int
    champion_version: str = Field(description="the champion the round started from")
    started_at: datetime
    ingest: dict[str, int]
    curation: dict = Field(description="manifest URI and the counts curation kept and considered")
    decision: RoundDecision
    candidate_version: str | None = None
    evaluation: dict[str, EvaluationReport] | None = Field(None, description="candidate and champion, same seeds")
    canary: dict | None = Field(None, description="the canary analysis' verdict and both arms")


class RoundSuccess(BaseModel):
    """A row of `fleet demo`'s table: the champion after a round, measured on the fleet."""

    model_config = ConfigDict(extra="forbid")

    round: int
    champion_version: str
    candidate_version: str | None
    decision: RoundDecision
    success_rate: float = Field(ge=0, le=1)
    success_ci95: tuple[float, float]
    episodes: int
    degraded_on_purpose: bool | None = None
    canary: dict | None = None
    evaluation_same_seeds: dict[str, dict[str, float]] | None = None


class Learning(BaseModel):
    """Did the loop learn? The base champion and the final one on the same seeded episodes, offline,
    paired: the fleet's per-round success varies with its episodes, this does not."""

    model_config = ConfigDict(extra="forbid")

    base_version: str
    final_version: str
    seeds: int = Field(description="episodes each champion ran: both splits, the same seeds for both")
    first_seed: int
    base_success: float = Field(ge=0, le=1)
    base_ci95: tuple[float, float]
    final_success: float = Field(ge=0, le=1)
    final_ci95: tuple[float, float]
    final_only: int = Field(description="seeds the final champion won and the base lost")
    base_only: int = Field(description="seeds the base won and the final champion lost")
    p_value: float = Field(ge=0, le=1, description="one-sided exact McNemar: is the final champion better?")
    base_outcomes: list[bool] = Field(description="each seed's success, seen split then held-out")
    final_outcomes: list[bool]
