"""Fleet agents on the real stack: policies by alias from MLflow, verified weights, swaps on
rollout events without losing an episode in flight, every episode through Kafka to the index."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet_agent.fleet import Fleet, FleetConfig
from fleet_agent.models import canary_robots
from fleet_agent.spool import Spool
from infra.clients import read_topic, s3_client
from learner.episode_index import EpisodeIndex
from learner.ingest import EpisodeIngestor
from registry.model_store import ModelStore
from registry.rollout import Rollout
from tests.conftest import cli_env
from worldmodel.planner import PlannerConfig

pytestmark = pytest.mark.integration

FAST = PlannerConfig(candidates=2, noise_samples=1)


def _telemetry(settings, kind: str) -> list[dict]:
    return [
        m
        for m in (json.loads(r.value) for r in read_topic(settings, settings.kafka.telemetry_topic))
        if m["kind"] == kind
    ]


def _versions(fleet: Fleet) -> set[str]:
    return {r.version for r in fleet.robots}


def test_robots_swap_on_rollout_between_decisions_and_every_episode_reaches_the_index(
    tracked, tiny_policy_dir, tmp_path
):
    store, rollout = ModelStore(tracked), Rollout(tracked)
    v1, v2 = store.register(tiny_policy_dir).version, store.register(tiny_policy_dir).version
    rollout.crown(v1)
    fleet = Fleet(tracked, FleetConfig(robots=3, planner=FAST))
    fleet.run(episodes=2)
    assert _versions(fleet) == {v1}

    fleet.models.start()  # follow rollout events while we tick by hand
    time.sleep(2)
    rollout.crown(v2, "a new champion")  # mid-episode for every robot
    deadline = time.monotonic() + 20
    while _versions(fleet) != {v2} and time.monotonic() < deadline:
        fleet.tick()
    assert _versions(fleet) == {v2}
    assert len(fleet.propagation_s) == 3 and max(fleet.propagation_s) < 20
    fleet.models.stop()
    fleet.run(episodes=3)  # every robot finishes the episode it was in when the model changed
    assert fleet.close(drain_timeout=60)

    mixed = [c for c, _ in fleet.finished if len({d.policy_version for d in c.decisions}) == 2]
    assert mixed, "an episode in flight during the swap was kept, with both versions on its decisions"
    index = EpisodeIndex(tmp_path / "index.sqlite")
    ingestor = EpisodeIngestor(tracked, index)
    stats = ingestor.run(until_indexed=len(fleet.finished), idle_timeout_s=20)
    ingestor.close()
    assert stats.indexed == len(fleet.finished) and stats.dead_lettered == 0
    assert set(index.episode_ids()) == {str(c.episode_id) for c, _ in fleet.finished}
    assert len(_telemetry(tracked, "episode")) == len(fleet.finished)
    rollout.close()


def test_a_tampered_canary_is_refused_and_robots_keep_their_model(tracked, tiny_policy_dir):
    store, rollout = ModelStore(tracked), Rollout(tracked)
    v1, v2 = store.register(tiny_policy_dir).version, store.register(tiny_policy_dir).version
    rollout.crown(v1)
    s3 = s3_client(tracked)
    key = next(
        o.object_name
        for o in s3.list_objects(tracked.s3.mlflow_bucket, recursive=True)
        if store.get(v2).run_id in o.object_name and o.object_name.endswith("video_model.safetensors")
    )
    forged = b"\x00" * 64
    s3.put_object(tracked.s3.mlflow_bucket, key, io.BytesIO(forged), len(forged))

    rollout.start_canary(v2, fraction=0.5)
    fleet = Fleet(tracked, FleetConfig(robots=4, planner=FAST))
    fleet.tick()
    assert _versions(fleet) == {v1}
    assert fleet.close()
    refused = _telemetry(tracked, "model_refused")
    assert refused and refused[0]["version"] == v2 and "video_model.safetensors" in refused[0]["reason"]
    assert refused[0]["kept_version"] == v1
    rollout.close()


def _fleet_with_a_canary(settings, policy_dir) -> tuple[Rollout, str, str, Fleet]:
    """Champion v1, canary v2 on half of 4 robots, which have made one decision each."""
    store, rollout = ModelStore(settings), Rollout(settings)
    v1, v2 = store.register(policy_dir).version, store.register(policy_dir).version
    rollout.crown(v1)
    rollout.start_canary(v2, fraction=0.5)
    fleet = Fleet(settings, FleetConfig(robots=4, planner=FAST))
    fleet.tick()
    return rollout, v1, v2, fleet


def test_rollback_restores_the_previous_champion_on_every_robot(tracked, tiny_policy_dir):
    rollout, v1, v2, fleet = _fleet_with_a_canary(tracked, tiny_policy_dir)
    assert _versions(fleet) == {v1, v2}
    canaries = canary_robots([r.robot_id for r in fleet.robots], v2, 0.5)
    assert 0 < sum(r.version == v2 for r in fleet.robots) == len(canaries)

    rollout.promote(v2, "canary looked good")
    fleet.models.refresh()
    fleet.tick()
    assert _versions(fleet) == {v2}
    rollout.rollback(reason="regression found later")
    fleet.models.refresh()
    fleet.tick()
    assert _versions(fleet) == {v1}
    assert fleet.close()
    rollout.close()


def test_robots_leaving_a_rolled_back_canary_time_their_switch_from_the_rollback(tracked, tiny_policy_dir):
    rollout, v1, v2, fleet = _fleet_with_a_canary(tracked, tiny_policy_dir)
    canaries = canary_robots([r.robot_id for r in fleet.robots], v2, 0.5)
    time.sleep(3)  # the champion's alias is now old; the rollback is what the canary robots follow
    rollout.rollback(reason="canary worse")
    fleet.models.refresh()
    fleet.tick()
    assert _versions(fleet) == {v1}
    assert len(fleet.propagation_s) == len(canaries) > 0 and max(fleet.propagation_s) < 2.5
    assert fleet.close()
    rollout.close()


def test_fleet_agents_run_finishes_its_episodes_and_reports_them(tracked, tiny_policy_dir):
    Rollout(tracked).crown(ModelStore(tracked).register(tiny_policy_dir).version)
    args = [sys.executable, "-m", "cli", "agents", "run", "--robots", "2", "--episodes", "2", "--candidates", "2"]
    out = subprocess.run(args, capture_output=True, text=True, env=cli_env(tracked), timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "2 episodes" in out.stdout and "spool drained" in out.stdout


def _start_agents(settings, logs: Path, *options: str) -> subprocess.Popen:
    """`fleet agents run` in its own process, its output to files in `logs`: nobody reads a pipe
    while a test waits, and a full one would stall the agents."""
    args = [sys.executable, "-m", "cli", "agents", "run", "--candidates", "2", *options]
    with (logs / "stdout").open("w") as out, (logs / "stderr").open("w") as err:
        return subprocess.Popen(args, stdout=out, stderr=err, text=True, env=cli_env(settings))


def _wait_for_an_episode(settings, agents: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while not _telemetry(settings, "episode") and agents.poll() is None and time.monotonic() < deadline:
        time.sleep(1)
    assert _telemetry(settings, "episode"), "the agents published no episode"


def test_sigterm_stops_the_agents_between_decisions_and_drains_the_spool(tracked, tiny_policy_dir, tmp_path):
    Rollout(tracked).crown(ModelStore(tracked).register(tiny_policy_dir).version)
    agents = _start_agents(tracked, tmp_path, "--robots", "2")
    try:
        _wait_for_an_episode(tracked, agents)
        agents.send_signal(signal.SIGTERM)
        agents.wait(timeout=120)
    finally:  # a failure here must not leave two robots running through the rest of the suite
        agents.kill()
    stdout, stderr = (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()
    assert agents.returncode == 0, stderr[-2000:]
    assert "SIGTERM" in stdout and "spool drained" in stdout


def test_an_agent_killed_mid_episode_loses_only_the_episodes_it_had_not_finished(tracked, tiny_policy_dir, tmp_path):
    Rollout(tracked).crown(ModelStore(tracked).register(tiny_policy_dir).version)
    agents = _start_agents(tracked, tmp_path, "--robots", "2")
    try:
        _wait_for_an_episode(tracked, agents)  # one robot has finished an episode; the other is mid-way
        agents.kill()  # SIGKILL: no handler, no drain, the spool's lock and files as they were
        agents.wait(timeout=30)
    finally:
        agents.kill()
    finished = {m["episode_id"] for m in _telemetry(tracked, "episode")}  # announced after it was spooled
    Spool(tracked.spool_dir).close()  # the kernel released the dead agent's lock; half-writes are swept
    restarted = subprocess.run(
        [sys.executable, "-m", "cli", "agents", "run", "--robots", "1", "--episodes", "1", "--candidates", "2"],
        capture_output=True,
        text=True,
        env=cli_env(tracked),
        timeout=600,
    )
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    assert "spool drained" in restarted.stdout
    shipped = [json.loads(r.value)["episode_id"] for r in read_topic(tracked, tracked.kafka.episodes_topic)]
    assert finished <= set(shipped)  # every episode the killed agent finished reached Kafka ...
    assert len(shipped) == len(set(shipped))  # ... once


def test_a_full_disk_costs_the_episodes_it_refused_and_nothing_else(tracked, tiny_policy_dir):
    Rollout(tracked).crown(ModelStore(tracked).register(tiny_policy_dir).version)
    fleet = Fleet(tracked, FleetConfig(robots=2, planner=FAST))
    for seq in (0, 1):  # the first two episodes meet the kernel's own ENOSPC
        (fleet.publisher.spool.root / f"{seq:012d}.media.tmp").symlink_to("/dev/full")
    fleet.run(episodes=4)
    assert fleet.close()  # the robots kept working, and what they kept was shipped
    assert len(fleet.not_kept) == 2 and len(fleet.finished) >= 2
    refused = _telemetry(tracked, "episode_not_kept")
    assert sorted(m["episode_id"] for m in refused) == sorted(str(i) for i in fleet.not_kept)
    assert all("disk under spool" in m["reason"] for m in refused)
    shipped = sorted(json.loads(r.value)["episode_id"] for r in read_topic(tracked, tracked.kafka.episodes_topic))
    assert shipped == sorted(str(core.episode_id) for core, _ in fleet.finished)
