"""One improvement round as a Prefect flow on the real stack: a fleet publishing episodes, the
learner curating, fine-tuning with DeepSpeed, evaluating, registering with lineage, and the canary
analysed on live telemetry until it is promoted or rolled back."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest

from fleet_agent.fleet import Fleet, FleetConfig
from fleet_agent.publisher import EpisodePublisher
from infra.clients import use_prefect
from infra.contracts.episode import CandidateRecord, Decision, EpisodeCore, ModelVersions, SuccessSource
from learner.curation import load_manifest
from learner.dataset import load_clips, save_clips
from learner.finetune import FinetuneJob
from registry.analysis import AnalysisConfig
from registry.model_store import ModelStore
from registry.rollout import Rollout
from sim.scripted import run_expert
from sim.tabletop import TabletopEnv
from worldmodel.planner import PlannerConfig
from worldmodel.stage_data import robot_logs

pytestmark = pytest.mark.integration
F = 4  # imagined frames per decision


def publish_expert_episodes(settings, n: int) -> list[str]:
    """Successful episodes whose chosen imagined futures are exactly what then happened."""
    publisher, env, ids = EpisodePublisher(settings), TabletopEnv(), []
    seed = 0
    while len(ids) < n:
        ep = run_expert(env, seed, noise=0.05)
        seed += 1
        if not ep["success"]:
            continue
        frames, steps = ep["frames"], len(ep["actions"])
        decisions, imagined = [], []
        for step in range(0, steps, 2):
            future = frames[step + 1 : step + 1 + F]
            future = np.concatenate([future, np.repeat(future[-1:], F - len(future), 0)])
            imagined.append(np.stack([future, future[::-1]]))  # chosen 0 as executed, 1 a decoy
            decisions.append(
                Decision(
                    step=step, candidates=[CandidateRecord(index=0), CandidateRecord(index=1)], chosen=0, latency_ms=1.0
                )
            )
        now = datetime.now(UTC)
        core = EpisodeCore(
            episode_id=uuid.uuid4(),
            robot_id="expert",
            task_id=ep["task_id"],
            instruction=ep["instruction"],
            model_versions=ModelVersions(policy="1", world_model="1", idm="1"),
            started_at=now,
            ended_at=now,
            success=True,
            success_source=SuccessSource.environment,
            actions=ep["actions"].tolist(),
            decisions=decisions,
        )
        ids.append(str(publisher.publish(core, frames, np.stack(imagined)).episode_id))
    assert publisher.close(60)
    return ids


def test_an_improvement_round_trains_registers_and_decides_on_live_canary_results(tracked, tiny_policy_dir, tmp_path):
    settings = tracked
    use_prefect(settings)
    from flows.config import RoundConfig
    from flows.improvement import improvement_round, round_run_name

    v1 = ModelStore(settings).register(tiny_policy_dir).version
    rollout = Rollout(settings)
    rollout.crown(v1)
    expert_ids = publish_expert_episodes(settings, 3)

    fleet = Fleet(settings, FleetConfig(robots=4, planner=PlannerConfig(candidates=2, noise_samples=1)))
    stop = threading.Event()
    runner = fleet.run_in_background(stop)
    replay = save_clips(robot_logs(2, seed=0), tmp_path / "replay", "scripted robot logs")
    config = RoundConfig(
        finetune=FinetuneJob(steps=3, batch=2),
        eval_episodes=1,
        eval_candidates=2,
        replay_dir=replay,
        analysis=AnalysisConfig(min_episodes=1, max_episodes=2),
        canary_timeout_s=600,
        work_dir=tmp_path / "rounds",
    )
    learning = []  # what the round tells a fleet that shares the learner's cores
    try:
        report = improvement_round(settings, config, round_id=1, learning=learning.append)
    finally:
        stop.set()
        runner.join(120)
        fleet.close()

    fleet.check_running()
    assert report.decision in ("promoted", "rolled_back", "kept") and report.champion_version == v1
    manifest = load_manifest(settings, report.curation["manifest"])
    assert {e.episode_id for e in manifest.of_role("world_model_and_idm")} >= set(expert_ids)
    trained_on = load_clips(tmp_path / "rounds" / round_run_name(settings, v1, report.curation["manifest"]) / "dataset")
    assert len(trained_on) == len(manifest.entries) + 2, "the manifest's episodes and the replay's clips"
    assert [c.stage for c in trained_on].count("replay") == 2
    assert learning == [True, False]
    candidate = ModelStore(settings).get(report.candidate_version)
    assert candidate.tags["parent_version"] == v1 and candidate.tags["dataset_manifest"] == report.curation["manifest"]
    assert "eval.success_rate" in candidate.tags and "canary_analysis" in candidate.tags
    assert set(report.evaluation) == {"candidate", "champion"}
    champion = ModelStore(settings).aliases()["champion"]
    assert champion == (candidate.version if report.decision == "promoted" else v1)
    assert "canary" not in ModelStore(settings).aliases()
    rollout.close()
