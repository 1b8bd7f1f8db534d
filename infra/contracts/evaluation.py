"""A policy's evaluation on seeded episodes: what `fleet eval` writes, a round compares and the
registry records (as `eval.*` tags). Rates are shares in [0, 1]; intervals are Wilson 95%."""

from __future__ import annotations

from typing import Literal

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
    first_seed: int = Field(10_000, description="episode i of each split ran on seed first_seed + i")
    phrasing: Literal["simulator", "operator"] = Field(
        "simulator", description="the simulator's instructions, or the same tasks in words training never used"
    )
    understood_rate: Rate | None = Field(
        None,
        ge=0,
        le=1,
        description="share of episodes whose policy read its task's own instruction, after grounding an "
        "instruction with unknown words in the closest task instruction",
    )
    outcomes: dict[str, list[bool]] = Field(
        default_factory=dict, description="per split, each seed's success: what a paired test compares"
    )

    def metrics(self) -> dict[str, float]:
        """The scalar figures, as the registry's `eval.*` tags hold them."""
        return {k: v for k, v in self.model_dump().items() if isinstance(v, float)}


class PairedTest(BaseModel):
    """Two policies on the same seeds: the seeds only one of them won, and the exact McNemar p."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    episodes: int
    a_successes: int
    b_successes: int
    a_only: int = Field(description="seeds A won and B lost")
    b_only: int = Field(description="seeds B won and A lost")
    p_value: float = Field(ge=0, le=1, description="two-sided exact McNemar")


class PairedComparison(BaseModel):
    """What `fleet compare` writes: per split, and over both splits pooled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    a: str
    b: str
    first_seed: int
    splits: dict[str, PairedTest]


class PartEffect(BaseModel):
    """One policy of an attribution, on the seeds of both splits, paired with the base (A) against it (B)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    success_rate: Rate = Field(ge=0, le=1)
    ci95: Interval
    against_base: PairedTest


class Attribution(BaseModel):
    """What `fleet attribute` writes: which fine-tuned part moved success. `effects` holds the
    fine-tuned policy ("tuned") and the base with each fine-tuned part swapped in alone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: str
    tuned: str
    first_seed: int
    seeds: int = Field(description="both splits together")
    arm_turn_deg: float = Field(0.0, description="the arm the episodes ran on, in degrees from the logs' arm")
    base_success_rate: Rate = Field(ge=0, le=1)
    base_ci95: Interval
    effects: dict[str, PartEffect]
