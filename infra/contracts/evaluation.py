"""A policy's evaluation on seeded episodes: what `fleet eval` writes, a round compares and the
registry records (as `eval.*` tags). Rates are shares in [0, 1]; intervals are Wilson 95%."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

Rate = float
Interval = tuple[float, float]


class EvaluationReport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    success_rate: Rate = Field(ge=0, le=1, description="seen tasks")
    success_ci95: Interval
    heldout_success_rate: Rate = Field(ge=0, le=1, description="tasks held out of all training")
    heldout_ci95: Interval
    random_success_rate: Rate = Field(ge=0, le=1, description="a random policy on the same seen seeds")
    random_ci95: Interval
    random_heldout_success_rate: Rate = Field(ge=0, le=1)
    random_heldout_ci95: Interval
    decision_latency_ms_p50: float
    decision_latency_ms_p95: float
    rejection_rate: Rate = Field(ge=0, le=1, description="share of imagined candidates the planner rejected")
    episodes_per_split: int = Field(ge=1)

    def metrics(self) -> dict[str, float]:
        """The scalar figures, as the registry's `eval.*` tags hold them."""
        return {k: v for k, v in self.model_dump().items() if isinstance(v, float)}
