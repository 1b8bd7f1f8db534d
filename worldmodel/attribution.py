"""Which part of a fine-tune moved success (`fleet attribute`).

A fine-tune trains three networks at once: the generator, the IDM and the critic (the text
encoder stays frozen). To say which of them changed the policy, each is swapped alone into the
base policy, and every hybrid runs the same seeds as the base and the fine-tuned policy. Each is
paired with the base, seed by seed (exact McNemar). A part whose hybrid moves success is a part
that learned something the planner uses; the parts act together, so the hybrids' changes need not
add up to the fine-tuned policy's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from infra.contracts.evaluation import Attribution, PairedTest, PartEffect
from infra.errors import UsageError
from infra.stats import mcnemar, wilson
from sim.tabletop import TabletopConfig
from worldmodel.evaluate import evaluate
from worldmodel.planner import PlannerConfig
from worldmodel.policy import WorldModelPolicy

FINE_TUNED = ("video_model", "idm", "critic")


def swap_in(base: Path, tuned: Path, part: str, out: Path) -> Path:
    """A copy of the `base` policy directory with `part`'s weights and config taken from `tuned`."""
    if part not in FINE_TUNED:
        raise UsageError(f"unknown part {part!r}", hint=", ".join(FINE_TUNED))
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(base, out)
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(tuned / f"{part}{suffix}", out / f"{part}{suffix}")
    return out


def attribute(
    base: Path,
    tuned: Path,
    episodes: int,
    work: Path,
    planner_config: PlannerConfig | None = None,
    progress=None,
    env: TabletopConfig | None = None,
) -> Attribution:
    """The base, the tuned policy and the three hybrids on the same `episodes` seeds per split, in
    the environment `env` says (the robot's arm mounting; unset: the logs' arm)."""
    env = env or TabletopConfig()
    base, tuned = WorldModelPolicy.locate(base), WorldModelPolicy.locate(tuned)
    policies = {"base": base, "tuned": tuned} | {
        part: swap_in(base, tuned, part, work / f"base+{part}") for part in FINE_TUNED
    }
    outcomes, first_seed = {}, 0
    for name, directory in policies.items():
        report = evaluate(directory, episodes, planner_config=planner_config, progress=progress, env=env)
        outcomes[name] = report.outcomes["seen"] + report.outcomes["heldout"]
        first_seed = report.first_seed
    b = outcomes.pop("base")

    def effect(o: list[bool]) -> PartEffect:
        test = mcnemar(o, b)
        return PartEffect(
            success_rate=round(sum(o) / len(o), 4),
            ci95=wilson(sum(o), len(o)),
            against_base=PairedTest(episodes=len(o), a_successes=sum(o), b_successes=sum(b), **test),
        )

    return Attribution(
        base=str(base),
        tuned=str(tuned),
        first_seed=first_seed,
        seeds=len(b),
        arm_turn_deg=env.arm_turn_deg,
        base_success_rate=round(sum(b) / len(b), 4),
        base_ci95=wilson(sum(b), len(b)),
        effects={name: effect(o) for name, o in outcomes.items()},
    )
