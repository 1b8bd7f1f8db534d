"""A fleet agent process's configuration, validated on construction (no torch: the CLI reads it)."""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from worldmodel.planner_config import PlannerConfig


@dataclass
class FleetConfig:
    robots: Annotated[int, Field(ge=1)] = 4
    split: Literal["seen", "heldout", "all"] = "seen"  # the task family robots are given
    seed: int = 0  # first task seed; each episode takes the next one
    id_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "robot"
    batch_robots: Annotated[int, Field(ge=1)] = (
        8  # robots per inference batch: larger uses the cores better, smaller swaps sooner
    )
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    # The robots' arm mounting (`sim.tabletop.TabletopConfig.arm_turn_deg`); the robot logs' arm is at 0.
    arm_turn_deg: Annotated[float, Field(ge=-180, le=180)] = 0.0

    def robot_ids(self) -> list[str]:
        return [f"{self.id_prefix}-{i:03d}" for i in range(self.robots)]
