"""The data-plane demo flow: synthetic robots publish episodes, the learner ingests them.

It stands in for the self-learning loop's rounds until those exist, and runs through Prefect so
the run shows in the Prefect UI of the stack.
"""

from __future__ import annotations

from prefect import flow, task

from fleet_agent.publisher import EpisodePublisher
from fleet_agent.synthetic import episode_stream
from infra.settings import Settings
from learner.episode_index import EpisodeIndex
from learner.ingest import EpisodeIngestor


@task(retries=2, retry_delay_seconds=2)
def publish_episodes(settings: Settings, episodes: int, robots: int, seed: int) -> list[str]:
    publisher = EpisodePublisher(settings)
    ids = [str(publisher.publish(*ep).episode_id) for ep in episode_stream(seed, episodes, robots)]
    if not publisher.close(drain_timeout=120):
        raise RuntimeError(f"{publisher.pending()} episodes still spooled: {publisher.last_error}")
    return ids


@task(retries=2, retry_delay_seconds=2)
def ingest_episodes(settings: Settings, expected_ids: list[str]) -> dict:
    index = EpisodeIndex(settings.index_path)
    ingestor = EpisodeIngestor(settings, index)
    try:
        missing = set(expected_ids) - set(index.episode_ids())
        stats = ingestor.run(until_indexed=len(missing), idle_timeout_s=60) if missing else None
    finally:
        ingestor.close()
    arrived = set(expected_ids) & set(index.episode_ids())
    index.close()
    return {
        "published": len(expected_ids),
        "arrived": len(arrived),
        "dead_lettered": stats.dead_lettered if stats else 0,
    }


@flow(name="data-plane-demo", log_prints=True)
def data_plane_demo(settings: Settings, episodes: int = 200, robots: int = 10, seed: int = 0) -> dict:
    ids = publish_episodes(settings, episodes, robots, seed)
    return ingest_episodes(settings, ids)
