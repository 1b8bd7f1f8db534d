"""`fleet bench learning`: does the fleet's own data make the policy better?

The demo's rounds run twice from the same base, on the same stack: once as the loop runs them
(each fine-tune mixes the fleet's episodes with the replayed robot logs), once as a control that
fine-tunes the same steps on the replayed logs alone (both fleet shares 0). Both arms
keep the canary and its analysis, so each promotes only what it can show is not worse; neither
degrades a round on purpose. At the end each arm's base and final champion run the same seeded
episodes offline, and the two final champions are paired on those seeds: a gain the control also
shows is the extra steps, not the fleet's data. So are the two arms' last candidates, promoted or
not: at a base's low success rates the canary rarely can tell, and both finals are then the base.
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

from benchmarks import BenchResult
from flows.config import DEMO_PROFILES
from flows.fleet_demo import fleet_demo, measure_learning
from flows.learning_curve import draw_learning_curve
from infra import stack
from infra.settings import Settings
from infra.stats import mcnemar
from registry.model_store import ModelStore

ARMS = ("fleet", "control")


class LearningArm(BenchResult):
    fleet_share: float  # the critic's
    idm_fleet_share: float
    video_fleet_share: float  # the world model's
    rounds: list[dict]
    learning: dict
    lost: int
    seconds: float
    # The last round's candidate against the base on the same seeds, promoted or not: where the
    # canary cannot tell, both arms' final champion is the base, and only this compares the arms.
    last_candidate: dict | None = None


class LearningBench(BenchResult):
    profile: str
    base: str  # what the shared base was trained as: "demo" or a `fleet train` profile
    arms: dict[str, LearningArm]
    seeds: int
    fleet_final_success: float
    control_final_success: float
    fleet_only: int  # seeds the fleet arm's final champion won and the control's lost
    control_only: int
    p_value: float  # one-sided exact McNemar: is the fleet arm's final champion better?
    last_candidates: dict | None  # the same for the two arms' last candidates (`pair`'s keys)
    plot: str


def bench_learning(
    settings: Settings,
    profile: str,
    work: Path,
    plot: Path,
    progress=None,
    base: str | None = None,
    rounds: int | None = None,
    **shares: float | None,
) -> LearningBench:
    """Both arms in turn, each on its own topics, registered model and index; the base is trained
    once (the demo reuses `work/base`), as `base` says ("demo" or a `fleet train` profile; unset:
    the profile's), and each arm runs `rounds` rounds (unset: the profile's). `shares`
    (`fleet_share`, `idm_fleet_share`, `video_fleet_share`) replace the profile's in the fleet
    arm; the control's are all 0."""
    chosen = DEMO_PROFILES[profile]
    demo = chosen.model_copy(
        update={"degrade_round": 0, "train": base or chosen.train, "rounds": rounds or chosen.rounds}
    )
    fleet_job = dataclasses.replace(demo.round.finetune, **{k: v for k, v in shares.items() if v is not None})
    run = f"learning-{uuid.uuid4().hex[:6]}"
    arms, evaluated = {}, {}  # both arms start from the same base: its offline outcomes are measured once
    for arm in ARMS:
        finetune = (
            fleet_job
            if arm == "fleet"
            else dataclasses.replace(fleet_job, fleet_share=0, idm_fleet_share=0, video_fleet_share=0)
        )
        arm_profile = demo.model_copy(update={"round": demo.round.model_copy(update={"finetune": finetune})})
        arm_settings = settings.isolated(f"{run}-{arm}", work / "runs" / f"{run}-{arm}")
        stack.ensure_topics(arm_settings)
        result = fleet_demo(arm_settings, arm_profile, work, progress, evaluated)
        learned = result["learning"]
        last = next((r["candidate_version"] for r in reversed(result["rounds"]) if r["candidate_version"]), None)
        if last is not None:  # already measured (and not run again) when it is the final champion
            store = ModelStore(arm_settings)
            last = measure_learning(
                store,
                learned["base_version"],
                last,
                demo.learning_episodes,
                demo.candidates,
                progress,
                evaluated,
                demo.round.arm_turn_deg,
            ).model_dump(mode="json")
        arms[arm] = LearningArm(
            fleet_share=finetune.share("critic"),
            idm_fleet_share=finetune.share("idm"),
            video_fleet_share=finetune.share("video"),
            rounds=result["rounds"],
            learning=learned,
            lost=result["lost"],
            seconds=result["seconds"],
            last_candidate=last,
        )
    draw_learning_curve(
        {a: arms[a].rounds for a in ARMS}, plot, f"profile {profile}: the fleet's episodes against replay alone"
    )
    candidates = [arms[a].last_candidate for a in ARMS]
    last_candidates = pair(*(c["final_outcomes"] for c in candidates)) if all(candidates) else None
    return LearningBench(
        profile=profile,
        base=demo.train,
        arms=arms,
        plot=str(plot),
        last_candidates=last_candidates,
        **pair_finals(arms),
    )


def pair(fleet: list[bool], control: list[bool]) -> dict:
    """Two policies' outcomes on the same seeds: is the fleet arm's better (one-sided exact McNemar)?"""
    test = mcnemar(fleet, control, alternative="greater")
    return {
        "seeds": len(fleet),
        "fleet_success": round(sum(fleet) / len(fleet), 4),
        "control_success": round(sum(control) / len(control), 4),
        "fleet_only": test["a_only"],
        "control_only": test["b_only"],
        "p_value": test["p_value"],
    }


def pair_finals(arms: dict[str, LearningArm]) -> dict:
    """The two arms' final champions, paired."""
    p = pair(*(arms[a].learning["final_outcomes"] for a in ARMS))
    return {
        "seeds": p["seeds"],
        "fleet_final_success": p["fleet_success"],
        "control_final_success": p["control_success"],
        "fleet_only": p["fleet_only"],
        "control_only": p["control_only"],
        "p_value": p["p_value"],
    }
