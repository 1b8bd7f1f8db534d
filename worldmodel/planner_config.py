"""The planner's settings, validated on construction; apart from the planner so that the CLI and
the fleet's configuration read them without importing torch."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic.dataclasses import dataclass

Positive = Annotated[int, Field(ge=1)]
NonNegative = Annotated[float, Field(ge=0)]


@dataclass
class PlannerConfig:
    candidates: Positive = 8
    resample_budget: Annotated[int, Field(ge=0)] = 1  # extra rounds of K candidates when every one is rejected
    speed_limit: Annotated[float, Field(gt=0)] = 1.0  # |dx|, |dy| in units of the embodiment's maximum step
    speed_tolerance: NonNegative = 0.25
    min_confidence: Annotated[float, Field(ge=0, le=1)] = 0.2
    use_rejection: bool = True
    use_critic: bool = True  # False: take the first surviving candidate (no best-of-K)
    # An instruction with words the policy never trained on is read as the closest task
    # instruction (worldmodel/grounding.py); False: its unknown words reach the policy as <unk>.
    ground_instructions: bool = True
    noise_samples: Positive = 4
    noise_std: NonNegative = 0.03
    smooth_window: Positive = 3  # 1 = no sliding-window averaging
    execute_steps: Positive = 2
