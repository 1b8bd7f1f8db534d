"""`fleet demo`: the whole loop from nothing, on the embedded stack.

Base training (all three video stages, IDM, critic), the base policy registered and crowned, a
fleet of simulated robots running it and publishing every episode, then improvement rounds: each
curates the fleet's new episodes, fine-tunes the champion with DeepSpeed, evaluates, registers,
canaries the candidate on half the fleet and promotes or rolls it back on live results. One round
fine-tunes a deliberately degraded candidate, which the canary analysis must roll back. Fleet
success per round is measured on the champion's episodes of that round.

Each fine-tune sees every episode the fleet has produced so far plus the base's robot logs
(replay). Robots and learner share two cores here, so the robots pause while the learner trains;
on a real fleet they run on their own computers.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import numpy as np
from prefect import flow

from fleet_agent.fleet import Fleet, FleetConfig
from flows.config import DEMO_PROFILES, DemoProfile
from flows.improvement import improvement_round
from infra.contracts.rollout import RoundDecision
from infra.contracts.rounds import Learning, RoundReport, RoundSuccess
from infra.settings import Settings
from infra.stats import mcnemar, wilson
from learner.dataset import save_clips
from learner.episode_index import open_index
from learner.reconcile import reconcile
from registry.model_store import ModelStore
from registry.rollout import Rollout
from sim.tabletop import TabletopConfig
from worldmodel.evaluate import evaluate
from worldmodel.planner import PlannerConfig
from worldmodel.stage_data import robot_logs
from worldmodel.train import train_all


def _champion_success(fleet: Fleet, version: str, since: float, n: int, timeout_s: float = 1800) -> tuple[int, int]:
    """Wait for `n` episodes of `version` finished after `since` (monotonic), then count successes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fleet.check_running()
        done = [c for c, t in fleet.finished if t >= since and {d.policy_version for d in c.decisions} == {version}]
        if len(done) >= n:
            return sum(c.success for c in done[:n]), n
        time.sleep(0.5)
    raise TimeoutError(f"the fleet did not finish {n} episodes of version {version} in {timeout_s:.0f} s")


# Parameters pass as they are: validating them would copy `evaluated`, and outcomes measured in one
# call would be lost to the next (`fleet bench learning` evaluated the same base once per arm).
@flow(name="fleet-demo", log_prints=True, validate_parameters=False)
def fleet_demo(
    settings: Settings,
    profile: str | DemoProfile = "quick",
    work: Path = Path(".fleet/demo"),
    progress=None,
    evaluated: dict[str, list[bool]] | None = None,
) -> dict:
    """`evaluated`: offline outcomes already measured, by policy digest (see `measure_learning`)."""
    demo = DEMO_PROFILES[profile] if isinstance(profile, str) else profile
    base_profile = demo.train_profile()
    t0 = time.monotonic()
    print(f"base training: {base_profile}")
    train_all(base_profile, work / "base", progress)
    logs = robot_logs(base_profile.robot_clips, base_profile.seed, size=64)
    replay = save_clips(logs, work / "base" / "robot_logs", "scripted robot logs")
    store, rollout = ModelStore(settings), Rollout(settings)
    base = store.register(
        work / "base" / "policy", lineage={"parent_version": "none", "dataset_manifest": "scripted robot logs"}
    )
    rollout.crown(base.version, "the demo's base policy")

    arm = demo.round.arm_turn_deg
    fleet = Fleet(
        settings,
        FleetConfig(robots=demo.robots, planner=PlannerConfig(candidates=demo.candidates), arm_turn_deg=arm),
    )
    stop = threading.Event()
    runner = fleet.run_in_background(stop)

    def pause(learning: bool) -> None:  # two cores: the robots wait while the learner trains
        (fleet.paused.set if learning else fleet.paused.clear)()

    rounds = []
    try:
        since = time.monotonic()
        wins, n = _champion_success(fleet, base.version, since, demo.episodes_per_round)
        rounds.append(
            RoundSuccess(
                round=0,
                champion_version=base.version,
                candidate_version=None,
                decision=RoundDecision.baseline,
                success_rate=round(wins / n, 4),
                success_ci95=wilson(wins, n),
                episodes=n,
            )
        )
        print(f"round 0: champion {base.version} succeeds {wins}/{n}")
        for round_id in range(1, demo.rounds + 1):
            degrade = round_id == demo.degrade_round
            config = demo.round.model_copy(
                update={"degrade": degrade, "work_dir": work / "rounds", "replay_dir": replay}
            )
            # ingested_after=None: each round learns from every episode the fleet has produced so far
            started = time.monotonic()
            report = improvement_round(settings, config, round_id, ingested_after=None, learning=pause)
            champion = store.by_alias("champion").version
            # the round's champion episodes: a promoted candidate's canary episodes count too
            wins, n = _champion_success(fleet, champion, started, demo.episodes_per_round)
            rounds.append(
                RoundSuccess(
                    round=round_id,
                    champion_version=champion,
                    candidate_version=report.candidate_version,
                    decision=report.decision,
                    degraded_on_purpose=degrade,
                    success_rate=round(wins / n, 4),
                    success_ci95=wilson(wins, n),
                    episodes=n,
                    canary=report.canary,
                    evaluation_same_seeds=_evaluation(report),
                )
            )
            print(
                f"round {round_id}: candidate {report.candidate_version} {report.decision}; "
                f"champion {champion} succeeds {wins}/{n}"
            )
    finally:
        stop.set()
        runner.join(timeout=300)
        fleet.close(drain_timeout=120)
        rollout.close()
    final = store.by_alias("champion").version
    learning = measure_learning(
        store, base.version, final, demo.learning_episodes, demo.candidates, progress, evaluated, arm
    )
    print(
        f"learning: base v{learning.base_version} {learning.base_success:.0%}, final v{learning.final_version} "
        f"{learning.final_success:.0%} on the same {learning.seeds} seeds; one-sided p = {learning.p_value}"
    )
    summary = rounds_summary(settings, fleet, rounds, time.monotonic() - t0)
    return summary | {"learning": learning.model_dump(mode="json")}


def measure_learning(
    store: ModelStore,
    base: str,
    final: str,
    episodes: int,
    candidates: int,
    progress=None,
    evaluated: dict[str, list[bool]] | None = None,
    arm_turn_deg: float = 0.0,
) -> Learning:
    """The base and the final champion on the same `episodes` seeds per split, with the fleet's K
    and on the fleet's arms.
    Outcomes are kept in `evaluated` by the policy's digest (its files' sha256) and the seeds: the
    same weights on the same seeds give the same outcomes, so a final champion that is still the
    base, or a base another run already measured, is not run again."""
    evaluated = {} if evaluated is None else evaluated
    outcomes, first_seed = {}, 10_000
    for version in dict.fromkeys((base, final)):
        found = store.get(version)
        measure = [found.digests, episodes, first_seed, candidates, arm_turn_deg]
        key = hashlib.sha256(json.dumps(measure).encode()).hexdigest()
        if key not in evaluated:
            report = evaluate(
                store.fetch(found),
                episodes,
                seed=first_seed,
                planner_config=PlannerConfig(candidates=candidates),
                progress=_episode_counter(progress, f"learning: v{version}", 2 * episodes),
                env=TabletopConfig(arm_turn_deg=arm_turn_deg),
            )
            evaluated[key] = report.outcomes["seen"] + report.outcomes["heldout"]
        outcomes[version] = evaluated[key]
    b, f = outcomes[base], outcomes[final]
    test = mcnemar(f, b, alternative="greater")
    return Learning(
        base_version=base,
        final_version=final,
        seeds=len(b),
        first_seed=first_seed,
        base_success=round(sum(b) / len(b), 4),
        base_ci95=wilson(sum(b), len(b)),
        final_success=round(sum(f) / len(f), 4),
        final_ci95=wilson(sum(f), len(f)),
        final_only=test["a_only"],
        base_only=test["b_only"],
        p_value=test["p_value"],
        base_outcomes=b,
        final_outcomes=f,
    )


def _episode_counter(progress, label: str, total: int):
    """`evaluate`'s per-episode callback, drawn as one of the demo's progress bars."""
    if progress is None:
        return None
    bar, done = progress(label, total), iter(range(1, total + 1))
    return lambda: bar(next(done), None)


def _evaluation(report: RoundReport) -> dict[str, dict[str, float]] | None:
    figures = report.evaluation
    return figures and {
        arm: {"success_rate": f.success_rate, "heldout_success_rate": f.heldout_success_rate}
        for arm, f in figures.items()
    }


def rounds_summary(settings: Settings, fleet: Fleet, rounds: list[RoundSuccess], seconds: float) -> dict:
    from flows.improvement import ingest_new

    ingest_new.fn(settings, idle_s=10)
    published = {str(c.episode_id) for c, _ in fleet.finished}
    with open_index(settings) as index:
        counts = reconcile(settings, published, index)  # read apart from the ingest path
        rows = index.count()
    return {
        "rounds": [r.model_dump(mode="json", exclude_unset=True) for r in rounds],
        "episodes_published": len(published),
        "episodes_indexed": counts.indexed,
        "lost": counts.lost,
        "duplicated": counts.duplicated,
        "index_rows": rows,
        "rollout_propagation_s_p95": round(float(np.percentile(fleet.propagation_s, 95)), 3)
        if fleet.propagation_s
        else None,
        "seconds": round(seconds, 1),
    }
