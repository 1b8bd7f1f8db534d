"""`fleet bench fleet`: a thousand robots through the real stack, and what the platform does with them.

The robots are light: each finishes an episode every `episode_s` (a synthetic episode of the
contract's shape with small frames, replayed from a pool), announces it on the telemetry topic and
sends a heartbeat every few seconds, as an agent does, through the real publisher (S3, then Kafka)
and the real telemetry topic. Learner processes (`--learners`, one consumer group) index the
episodes meanwhile. Then, on what the run left behind, it times:

- learner lag: publish to indexed, per episode, over the run (p50, p95);
- canary catch-up: the canary analysis's telemetry reader (`CanaryTelemetry`: a seek by time to a
  minute before a canary started three quarters into the run, then a read to the topic's end);
- round load: a round's incremental read of the index (the episodes ingested since the first
  half's watermark), against reading the whole index;
- dashboard views in headless Chromium with `dashboard_episodes` in an index (`fleet bench
  dashboard`; a synthetic index, since a 2-core machine cannot run a million real episodes).
"""

from __future__ import annotations

import multiprocessing as mp
import time
import uuid

import numpy as np

from benchmarks import BenchResult
from benchmarks.dashboard import bench_dashboard
from benchmarks.scratch import BENCH_PREFIX, remove_run
from fleet_agent.publisher import EpisodePublisher
from infra import stack
from infra.clients import kafka_producer
from infra.contracts.telemetry import EpisodeTelemetry, Heartbeat
from infra.settings import Settings
from learner.episode_index import open_index
from learner.ingest import EpisodeIngestor
from learner.reconcile import reconcile
from registry.canary_telemetry import CanaryTelemetry
from sim.synthetic import EpisodeShape, episode_stream, robot_id

SMALL = EpisodeShape(steps=16, size=32, candidates=4, imagined_frames=4)


class FleetBench(BenchResult):
    robots: int
    learners: int
    duration_s: float
    episode_s: float
    episodes_published: int
    episodes_indexed: int
    lost: int
    duplicated: int
    telemetry_records: int
    learner_lag_s_p50: float
    learner_lag_s_p95: float
    canary_records_read: int
    canary_catchup_s: float
    round_episodes: int
    round_load_s: float
    full_load_s: float
    dashboard_episodes: int
    dashboard_view_s: dict[str, float]
    dashboard_view_s_max: dict[str, float]
    dashboard_server_ms: dict[str, float]
    all_views_under_2_s: bool
    canary_catchup_under_5_s: bool


def _learner(settings: Settings, ready, stop) -> None:
    """One learner process: ingest until told to stop (the group shares the partitions)."""
    with open_index(settings) as index:
        ingestor = EpisodeIngestor(settings, index)
        try:
            ingestor.join_group()  # learners run long before and after a benchmark: a join is not lag
            ready.set()
            ingestor.run(stop=stop)  # a multiprocessing Event has the is_set/wait the loop uses
        finally:
            ingestor.close()


def _run_fleet(settings: Settings, robots: int, duration_s: float, episode_s: float, progress) -> tuple:
    """The robots, for `duration_s`: (acknowledged ids, telemetry records sent, when they started)."""
    rate = robots / episode_s
    total = int(rate * duration_s)
    acknowledged: list[str] = []
    publisher = EpisodePublisher(settings, on_acknowledged=acknowledged.append)
    telemetry = kafka_producer(settings)
    topic = settings.kafka.telemetry_topic
    sent = 0

    def emit(key: str, message) -> None:
        nonlocal sent
        telemetry.send(topic, key=key.encode(), value=message.model_dump_json().encode())
        sent += 1

    heartbeat_s = settings.agent.heartbeat_interval_s
    t0 = time.time()
    next_heartbeat = t0
    episodes_by_robot: dict[str, int] = {}
    for i, (core, frames, imagined) in enumerate(episode_stream(seed=11, episodes=total, robots=robots, shape=SMALL)):
        time.sleep(max(0.0, t0 + i / rate - time.time()))
        if time.time() >= next_heartbeat:
            for robot in map(robot_id, range(robots)):
                emit(robot, Heartbeat(robot_id=robot, policy_version="1", episodes=episodes_by_robot.get(robot, 0)))
            next_heartbeat += heartbeat_s
        episode = publisher.publish(core, frames, imagined)
        episodes_by_robot[core.robot_id] = episodes_by_robot.get(core.robot_id, 0) + 1
        emit(core.robot_id, EpisodeTelemetry.of(episode))
        if progress:
            progress(i + 1)
    telemetry.flush(30)
    telemetry.close(5)
    publisher.wait_drained(600)
    publisher.close()
    return acknowledged, sent, t0


def _canary_catchup(settings: Settings, since: float, stall_s: float = 120.0) -> tuple[int, float]:
    """Records read, and seconds from the reader's creation until it is at the end of every
    partition (the high watermark its fetches report)."""
    t = time.perf_counter()
    reader = CanaryTelemetry(settings, since)
    try:
        read, deadline = 0, time.monotonic() + stall_s
        while True:
            read += len(reader.poll(timeout_ms=200))
            if reader.at_end():
                return read, time.perf_counter() - t
            if time.monotonic() > deadline:
                raise RuntimeError(f"the canary's reader did not reach the end of the telemetry in {stall_s:.0f} s")
    finally:
        reader.close()


def bench_fleet(
    settings: Settings,
    robots: int = 1000,
    duration_s: float = 120.0,
    episode_s: float = 60.0,
    learners: int = 2,
    dashboard_episodes: int = 1_000_000,
    dashboard_repeats: int = 3,
    keep: bool = False,
    progress=None,
) -> FleetBench:
    run = uuid.uuid4().hex[:8]
    work = settings.state_dir / "bench" / f"fleet-{run}"
    settings = settings.isolated(f"{BENCH_PREFIX}fleet-{run}", work)
    stack.up(settings, services=("s3", "kafka", "postgres") if settings.uses("postgres") else ("s3", "kafka"))
    with open_index(settings):
        pass  # the tables exist before several learners race to make them

    ctx = mp.get_context("spawn")
    stop, ready = ctx.Event(), [ctx.Event() for _ in range(learners)]
    workers = [ctx.Process(target=_learner, args=(settings, r, stop), daemon=True) for r in ready]
    for worker in workers:
        worker.start()
    try:
        if not all(r.wait(120) for r in ready):
            raise RuntimeError("the learners did not join their consumer group in 120 s")
        acknowledged, telemetry_records, start = _run_fleet(settings, robots, duration_s, episode_s, progress)
        with open_index(settings) as index:
            deadline = time.monotonic() + 300
            while index.count() < len(acknowledged) and time.monotonic() < deadline:
                time.sleep(0.5)
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
            if worker.is_alive():
                worker.kill()

    with open_index(settings) as index:
        lags = np.array(index.latencies_s())
        counts = reconcile(settings, acknowledged, index)
        # a round that ran halfway left this watermark: the next one reads what came after
        t = time.perf_counter()
        new = index.query(ingested_after=start + duration_s / 2, ingested_until=index.watermark())
        round_load_s = time.perf_counter() - t
        t = time.perf_counter()
        index.query()
        full_load_s = time.perf_counter() - t
    # a canary that started three quarters in: its reader seeks to a minute before that (robots' clocks)
    canary_read, canary_s = _canary_catchup(settings, start + duration_s * 3 / 4)

    dash = bench_dashboard(dashboard_episodes, work / "dashboard", dashboard_repeats)
    if not keep:
        remove_run(settings, work)
    return FleetBench(
        robots=robots,
        learners=learners,
        duration_s=duration_s,
        episode_s=episode_s,
        episodes_published=len(acknowledged),
        episodes_indexed=counts.indexed,
        lost=counts.lost,
        duplicated=counts.duplicated,
        telemetry_records=telemetry_records,
        learner_lag_s_p50=round(float(np.percentile(lags, 50)), 3) if len(lags) else -1.0,
        learner_lag_s_p95=round(float(np.percentile(lags, 95)), 3) if len(lags) else -1.0,
        canary_records_read=canary_read,
        canary_catchup_s=round(canary_s, 3),
        round_episodes=len(new),
        round_load_s=round(round_load_s, 3),
        full_load_s=round(full_load_s, 3),
        dashboard_episodes=dash.episodes,
        dashboard_view_s=dash.view_load_s_median,
        dashboard_view_s_max=dash.view_load_s_max,
        dashboard_server_ms=dash.server_view_ms_median,
        all_views_under_2_s=dash.all_under_target,
        canary_catchup_under_5_s=canary_s < 5.0,
    )
