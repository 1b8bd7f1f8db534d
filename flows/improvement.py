"""The self-improvement loop as Prefect flows.

`improvement_round`: ingest the fleet's new episodes, curate them into a manifest, fine-tune the
champion on it with DeepSpeed, evaluate candidate and champion on the same seeded episodes,
register the candidate with its lineage, put it in canary on part of the fleet, analyse the
canary's live telemetry against the champion's, then promote or roll back. Each step is a task
with retries; the fine-tuning run directory is named after the round, so a retried or restarted
round resumes its DeepSpeed checkpoints instead of starting over.

`improvement_loop`: rounds on a trigger, enough new successful episodes since the last round (or
a schedule, when served as a deployment with `fleet loop serve --cron ...`).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger, tags, task
from prefect.runtime import flow_run

from flows.config import RoundConfig
from infra.contracts.evaluation import EvaluationReport
from infra.contracts.rollout import CanaryDecision, RoundDecision
from infra.contracts.rounds import RoundReport
from infra.settings import Settings
from learner.curation import CurationConfig, curate, load_manifest, save_manifest
from learner.dataset import build_training_set
from learner.episode_index import EpisodeWriter, open_index
from learner.finetune import prepare_run, run_finetune
from learner.ingest import EpisodeIngestor
from registry.analysis import Arm
from registry.canary_telemetry import CanaryTelemetry
from registry.model_store import ModelStore, NoChampion
from registry.rollout import Rollout


@task(retries=3, retry_delay_seconds=5)
def ingest_new(settings: Settings, idle_s: float = 5.0, max_s: float = 60.0) -> dict:
    """Index what the fleet has published so far: until the topic is quiet for `idle_s`, or for at
    most `max_s` while robots keep publishing (the rest waits, safely, for the next round)."""
    with open_index(settings) as index:
        stats = _ingest_until_quiet(settings, index, idle_s, max_s)
    return {"indexed": stats.indexed, "duplicates_dropped": stats.duplicates, "dead_lettered": stats.dead_lettered}


def _ingest_until_quiet(settings: Settings, index: EpisodeWriter, idle_s: float, max_s: float):
    ingestor = EpisodeIngestor(settings, index)
    stop = threading.Event()
    timer = threading.Timer(max_s, stop.set)
    timer.start()
    try:
        stats = ingestor.run(stop=stop, idle_timeout_s=idle_s)
    finally:
        timer.cancel()
        ingestor.close()
    return stats


@task(retries=2, retry_delay_seconds=5)
def curate_episodes(settings: Settings, ingested_after: float | None, threshold: float) -> dict:
    """Curate the episodes ingested after the watermark `ingested_after` (None: all), up to the
    index's watermark now, which the result carries for the next round."""
    with open_index(settings) as index:
        watermark = index.watermark()
        episodes = index.query(ingested_after=ingested_after, ingested_until=watermark)
    manifest = curate(settings, episodes, CurationConfig(consistency_threshold=threshold))
    kept = len(manifest.of_role("world_model_and_idm"))
    return {
        "manifest": save_manifest(settings, manifest),
        "considered": manifest.considered,
        "kept_successes": kept,
        "kept_failures": len(manifest.of_role("critic_negative")),
        "kept_hindsight": len(manifest.of_role("hindsight")),
        "dropped_inconsistent": manifest.dropped_inconsistent,
        "skipped": len(manifest.skipped),  # media that could not be used: named in the manifest
        "watermark": watermark if watermark is not None else ingested_after,
    }


@task(retries=1, retry_delay_seconds=5)
def train_candidate(settings: Settings, champion: str, manifest_uri: str, config: RoundConfig, run_dir: Path) -> str:
    """Fine-tune the champion on the manifest; resumes from `run_dir`'s checkpoints on a retry."""
    store = ModelStore(settings)
    parent = store.fetch(store.get(champion))
    manifest = load_manifest(settings, manifest_uri)
    with open_index(settings) as index:
        data = build_training_set(settings, manifest, index, run_dir / "dataset", config.replay_dir)
    run = prepare_run(run_dir / "finetune", parent, data, config.finetune)
    run_finetune(run, config.world_size, progress=None)
    if config.degrade:
        _degrade(run / "policy")
    return str(run / "policy")


def round_run_name(settings: Settings, champion: str, manifest_uri: str) -> str:
    """A round's work directory is named by what it trains from, the champion and the manifest, so
    a retried round resumes its own run and a round on a new champion or new data starts afresh."""
    digest = hashlib.sha256(manifest_uri.encode()).hexdigest()[:12]
    return f"{settings.registry.model_name}-v{champion}-{digest}"


def _degrade(policy_dir: Path) -> None:
    """Scramble the IDM's output layer: the candidate then acts at random, and the canary must catch it."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(policy_dir / "idm.safetensors")
    generator = torch.Generator().manual_seed(0)
    save_file(
        {k: torch.randn(v.shape, generator=generator) if k.startswith("head") else v for k, v in weights.items()},
        policy_dir / "idm.safetensors",
    )


@task
def evaluate_pair(
    candidate_dir: str, champion_dir: str, episodes: int, candidates: int, arm_turn_deg: float = 0.0
) -> dict[str, EvaluationReport]:
    from sim.tabletop import TabletopConfig
    from worldmodel.evaluate import evaluate
    from worldmodel.planner import PlannerConfig

    config, env = PlannerConfig(candidates=candidates), TabletopConfig(arm_turn_deg=arm_turn_deg)
    return {
        name: evaluate(Path(d), episodes, planner_config=config, env=env)
        for name, d in (("candidate", candidate_dir), ("champion", champion_dir))
    }


@task(retries=3, retry_delay_seconds=5)
def register_candidate(settings: Settings, policy_dir: str, lineage: dict, metrics: dict) -> str:
    return ModelStore(settings).register(Path(policy_dir), lineage=lineage, metrics=metrics).version


@task(retries=3, retry_delay_seconds=5)
def start_canary(settings: Settings, version: str, fraction: float) -> float:
    rollout = Rollout(settings)
    try:
        return rollout.start_canary(version, fraction).at.timestamp()
    finally:
        rollout.close()


@task
def analyse_canary(settings: Settings, canary: str, champion: str, since: float, config: RoundConfig) -> dict:
    """Watch live telemetry until the analysis decides, then act on it: promote, roll back, or,
    when the canary's time is up without an answer, keep the champion. Every transition names the
    canary's version, so it can never demote the champion or end another canary."""
    log = get_run_logger()
    rollout = Rollout(settings)
    telemetry = CanaryTelemetry(settings, since)
    totals, skipped = {canary: Arm(0, 0), champion: Arm(0, 0)}, 0
    deadline = time.monotonic() + config.canary_timeout_s
    try:
        while True:
            c, h, bad = telemetry.arms(canary, champion)
            totals, skipped = {canary: totals[canary] + c, champion: totals[champion] + h}, skipped + bad
            timed_out = time.monotonic() > deadline
            verdict = rollout.decide(canary, totals[canary], totals[champion], config.analysis, final=timed_out)
            if verdict.decision != CanaryDecision.wait:
                log.info("canary %s: %s (%s)", canary, verdict.decision, verdict.reason)
                return {**verdict.as_dict(), "timed_out": timed_out, "skipped_records": skipped}
    finally:
        telemetry.close()
        rollout.close()


@flow(name="improvement-round", log_prints=True)
def improvement_round(
    settings: Settings,
    config: RoundConfig,
    round_id: int,
    ingested_after: float | None = None,
    learning: Callable[[bool], None] | None = None,
) -> RoundReport:
    """One round: ingest, curate, train, evaluate, register, canary, analyse, promote or roll back.

    `learning(True)` is called before ingest and `learning(False)` once the candidate is trained and
    evaluated: a demo whose robots share the learner's cores pauses them in between."""
    learning = learning or (lambda busy: None)
    started = datetime.now(UTC)
    champion = ModelStore(settings).by_alias("champion")
    if champion is None:
        raise NoChampion(
            f"no champion of {settings.registry.model_name} to improve",
            hint="register one with `fleet rollout register --policy DIR --crown`",
        )
    learning(True)
    try:
        ingested = ingest_new(settings)
        curated = curate_episodes(settings, ingested_after, config.consistency_threshold)
        report = {
            "round": round_id,
            "champion_version": champion.version,
            "started_at": started,
            "ingest": ingested,
            "curation": curated,
        }
        if curated["kept_successes"] + curated["kept_hindsight"] == 0:
            print(f"round {round_id}: no success to learn from, as instructed or in hindsight")
            return RoundReport(**report, decision=RoundDecision.skipped)
        run_dir = config.work_dir / round_run_name(settings, champion.version, curated["manifest"])
        candidate_dir = train_candidate(settings, champion.version, curated["manifest"], config, run_dir)
        store = ModelStore(settings)
        figures = evaluate_pair(
            candidate_dir, str(store.fetch(champion)), config.eval_episodes, config.eval_candidates, config.arm_turn_deg
        )
    finally:
        learning(False)
    lineage = {
        "parent_version": champion.version,
        "dataset_manifest": curated["manifest"],
        "round": round_id,
        "degraded_on_purpose": config.degrade,
        "replay": str(config.replay_dir or "none"),
        "champion_success_rate_same_seeds": figures["champion"].success_rate,
        "prefect_flow_run_id": str(flow_run.id or ""),
    }
    version = register_candidate(settings, candidate_dir, lineage, figures["candidate"].metrics())
    since_canary = start_canary(settings, version, config.canary_fraction)
    verdict = analyse_canary(settings, version, champion.version, since_canary, config)
    decision = RoundDecision.after(verdict["decision"])
    print(f"round {round_id}: candidate {version} {decision} ({verdict['reason']})")
    return RoundReport(**report, candidate_version=version, evaluation=figures, canary=verdict, decision=decision)


@flow(name="improvement-loop", log_prints=True)
def improvement_loop(
    config: RoundConfig,
    settings: Settings | None = None,
    rounds: int = 1,
    min_new_successes: int = 20,
    poll_s: float = 10.0,
    degrade_round: int | None = None,
) -> list[RoundReport]:
    """Rounds whenever `min_new_successes` successful episodes have been indexed since the last one
    (by the learner's ingest watermark, not the robots' clocks).

    Served as a deployment it reads its settings from the environment (FLEET_*), so no secret
    travels as a flow parameter."""
    settings = settings or Settings()
    reports, watermark = [], None
    for round_id in range(1, rounds + 1):
        while True:
            ingest_new(settings)
            with open_index(settings) as index:
                fresh = index.count(success=True, ingested_after=watermark)
            if fresh >= min_new_successes:
                break
            time.sleep(poll_s)
        round_config = config.model_copy(update={"degrade": round_id == degrade_round})
        with tags(settings.registry.flow_run_tag):  # a served run's tags do not reach its subflows
            reports.append(report := improvement_round(settings, round_config, round_id, watermark))
        watermark = report.curation.get("watermark", watermark)
    return reports
