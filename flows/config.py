"""The improvement loop's configuration: one round, and the demo's profiles, validated on construction.

Kept apart from the flows so that the CLI reads the defaults without importing Prefect (which
must be pointed at its server before it is imported) or torch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from learner.finetune import FinetuneJob
from registry.analysis import AnalysisConfig

Share = Annotated[float, Field(gt=0, le=1)]


class RoundConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    finetune: FinetuneJob = FinetuneJob()
    world_size: Annotated[int, Field(ge=1)] = 1
    consistency_threshold: Annotated[float, Field(ge=-1, le=1)] = 0.3
    # Clips (`learner.dataset.save_clips` layout) mixed into every fine-tune, e.g. the robot logs
    # the base was trained on: a round's handful of new successes alone would make it forget.
    replay_dir: Path | None = None
    eval_episodes: Annotated[int, Field(ge=1)] = 20  # per split, the same seeds for candidate and champion
    eval_candidates: Annotated[int, Field(ge=1)] = 8
    canary_fraction: Share = 0.5
    analysis: AnalysisConfig = AnalysisConfig()
    canary_timeout_s: Annotated[float, Field(gt=0)] = 1800.0
    degrade: bool = False  # a deliberately broken candidate: a drill for the canary analysis
    # The fleet's arm mounting (`sim.tabletop.TabletopConfig.arm_turn_deg`): the fleet's robots,
    # and every offline evaluation of what they run, use it. The robot logs' arm is at 0.
    arm_turn_deg: Annotated[float, Field(ge=-180, le=180)] = 0.0
    work_dir: Path = Path(".fleet/rounds")


def _demo_base():
    # Imported here: the training module needs torch, which the CLI's option defaults do not.
    from worldmodel.train import TrainProfile

    # A base that has seen few robot demonstrations and little video training: what the fleet's
    # own successes then teach it is what the rounds measure.
    return TrainProfile(
        robot_clips=200,
        pretrain_steps=150,
        midtrain_steps=150,
        posttrain_steps=400,
        idm_steps=3000,
        imagined_windows=3000,
        idm_adapt_steps=1000,
        critic_steps=300,
    )


# The canary is promoted once shown not worse than the champion by the smaller of 10 points and a
# quarter of its rate (one-sided 95% bound): at the demo's rates of 5-10%, only a canary shown better
# within 60 episodes an arm. Past 60 an arm (or as precise, with uneven arms) it cannot tell, and
# before that once the chance of being shown so by then is under 5% (`futility`): the champion is kept.
# The world model takes a tenth of its batch from the fleet (the IDM and critic half): at half, a
# round's few successes made the round-3 candidate win 7 of 200 seeds against 17 for the control
# that replays logs alone; at a tenth, 16 (README, `fleet bench learning`).
_QUICK_ROUND = RoundConfig(
    finetune=FinetuneJob(steps=200, batch=16, lr=1e-3, checkpoint_every=100, video_fleet_share=0.1),
    eval_episodes=2,
    eval_candidates=4,
    analysis=AnalysisConfig(min_episodes=20, margin=0.10, max_episodes=60),
    canary_fraction=0.5,
    canary_timeout_s=900,
)
# A fleet whose arms are mounted a quarter turn from the arm that recorded the robot logs: on camera
# the same, but a command moves the effector sideways, so the base's IDM fails it. What the logs
# cannot teach, the fleet's own executed transitions can: the IDM's real frames come from the fleet
# alone, for 600 steps at the base's learning rate. Its imagined half stays: futures imagined on the
# replayed logs, labelled with the IDM's reading of the real future (the fleet's own actions did
# not make the futures imagined from its frames). README, "A fleet the logs cannot teach".
_TURNED_ROUND = _QUICK_ROUND.model_copy(
    update={
        "arm_turn_deg": 90.0,
        "finetune": dataclasses.replace(
            _QUICK_ROUND.finetune,
            steps=600,
            lr=2e-3,
            checkpoint_every=200,
            idm_fleet_share=1.0,
            imagined_labels="read",
        ),
    }
)


class DemoProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    train: str = "demo"  # "demo": the lighter base above, or a `worldmodel.train.PROFILES` name
    robots: Annotated[int, Field(ge=1)] = 8
    candidates: Annotated[int, Field(ge=1)] = 4  # K on the robots: half the default, so episodes finish faster
    rounds: Annotated[int, Field(ge=1)] = 3  # improvement rounds, the degraded one included
    degrade_round: Annotated[int, Field(ge=0)] = 2  # 0: none
    episodes_per_round: Annotated[int, Field(ge=1)] = 50  # champion episodes that measure a round's fleet success
    # per split: the base and the final champion each run 2x this many seeded episodes offline
    learning_episodes: Annotated[int, Field(ge=1)] = 100
    round: RoundConfig = _QUICK_ROUND

    @model_validator(mode="after")
    def _degrade_round_is_a_round(self) -> DemoProfile:
        if self.degrade_round > self.rounds:
            raise ValueError(f"degrade_round {self.degrade_round} is past the last round ({self.rounds})")
        return self

    def train_profile(self):
        from worldmodel.train import PROFILES

        return _demo_base() if self.train == "demo" else PROFILES[self.train]


DEMO_PROFILES = {
    "quick": DemoProfile(),
    "turned": DemoProfile(round=_TURNED_ROUND),
    "ci": DemoProfile(
        train="ci",
        robots=4,
        candidates=2,
        rounds=2,
        degrade_round=2,
        episodes_per_round=4,
        learning_episodes=1,
        round=RoundConfig(
            finetune=FinetuneJob(steps=3, batch=2),
            eval_episodes=1,
            eval_candidates=2,
            analysis=AnalysisConfig(min_episodes=1, max_episodes=2),
            canary_timeout_s=600,
        ),
    ),
}
