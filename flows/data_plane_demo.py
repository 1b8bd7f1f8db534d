"""The data-plane demo flow: synthetic robots publish episodes, the learner ingests them.

It stands in for the self-learning loop's rounds until those exist, and runs through Prefect so
the run shows in the Prefect UI of the stack.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
from prefect import flow, task

from fleet_agent.publisher import EpisodePublisher
from infra.settings import Settings
from learner.episode_index import open_index
from learner.ingest import EpisodeIngestor
from sim.synthetic import episode_stream


@task(retries=2, retry_delay_seconds=2)
def publish_episodes(settings: Settings, episodes: int, robots: int, seed: int | None, rate: float) -> list[str]:
    """The fleet finishing `rate` episodes per second between them."""
    publisher = EpisodePublisher(settings)
    ids, start = [], time.perf_counter()
    for i, episode in enumerate(episode_stream(seed, episodes, robots)):
        time.sleep(max(0.0, start + i / rate - time.perf_counter()))
        ids.append(str(publisher.publish(*episode).episode_id))
    if not publisher.close(drain_timeout=120):
        raise RuntimeError(f"{publisher.pending()} episodes still spooled: {publisher.last_error}")
    return ids


@task
def ingest_episodes(settings: Settings, expected: int) -> dict:
    """Run the learner's ingest until `expected` new episodes are indexed (or it goes idle)."""
    with open_index(settings) as index:
        ingestor = EpisodeIngestor(settings, index)
        try:
            stats = ingestor.run(until_indexed=expected, idle_timeout_s=60)
        finally:
            ingestor.close()
    return {"indexed": stats.indexed, "duplicates_dropped": stats.duplicates, "dead_lettered": stats.dead_lettered}


@flow(name="data-plane-demo", log_prints=True)
def data_plane_demo(
    settings: Settings, episodes: int = 200, robots: int = 10, rate: float = 40.0, seed: int | None = None
) -> dict:
    """Robots publish while the learner ingests, as on a live fleet."""
    started = datetime.now(UTC)
    ingest = ingest_episodes.submit(settings, episodes)
    ids = publish_episodes(settings, episodes, robots, seed, rate)
    stats = ingest.result()
    with open_index(settings) as index:
        arrived = len(set(ids) & set(index.episode_ids()))
        latencies_ms = np.array(index.latencies_s(since=started)) * 1000
    return {
        "published": len(ids),
        "arrived": arrived,
        **stats,
        "latency_ms_p50": round(float(np.percentile(latencies_ms, 50)), 1) if arrived else None,
        "latency_ms_p99": round(float(np.percentile(latencies_ms, 99)), 1) if arrived else None,
    }
