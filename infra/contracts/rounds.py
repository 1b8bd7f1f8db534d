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
