"""`fleet bench ingest`: the data plane end to end, robot publisher to learner index.

The publisher runs in this process, the ingestor in a second one (as on a real deployment,
and so both cores work); both talk to the configured S3 and Kafka. Each run uses a fresh topic,
consumer group, spool and index, so earlier runs cannot flatter or spoil the figures.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import uuid
from pathlib import Path

import numpy as np

from fleet_agent.publisher import EpisodePublisher
from fleet_agent.synthetic import EpisodeShape, synthetic_episode
from infra import stack
from infra.settings import Settings
from learner.episode_index import EpisodeIndex
from learner.ingest import EpisodeIngestor


def _ingest_worker(settings_json: str, topic: str, group: str, expected: int, ready, done) -> None:
    settings = Settings.model_validate_json(settings_json)
    index = EpisodeIndex(settings.index_path)
    ingestor = EpisodeIngestor(settings, index, topic=topic, group_id=group)
    # Join the group before the clock starts: a join is a one-off cost, not throughput.
    while not ingestor.consumer.assignment():
        ingestor.consumer.poll(timeout_ms=200)
    ready.set()
    stats = ingestor.run(until_indexed=expected, idle_timeout_s=120)
    done.put({"indexed": stats.indexed, "duplicates": stats.duplicates, "dead_lettered": stats.dead_lettered})
    ingestor.close()
    index.close()


def bench_ingest(settings: Settings, episodes: int = 1000, robots: int = 20, progress=None) -> dict:
    run = uuid.uuid4().hex[:8]
    work = settings.state_dir / "bench" / f"ingest-{run}"
    settings = settings.model_copy(
        update={
            "agent": settings.agent.model_copy(update={"spool_dir": work / "spool"}),
            "learner": settings.learner.model_copy(update={"index_path": work / "index.sqlite"}),
        }
    )
    topic = f"bench.episodes.{run}"
    stack.up(settings, services=("s3", "kafka"))
    stack.ensure_topics(settings, extra=(topic,))

    # Rendering noisy frames costs more than shipping them; render a pool once, give every
    # episode its own id, robot and labels, and reuse the pool's media.
    rng = np.random.default_rng(0)
    shape = EpisodeShape()
    pool = [synthetic_episode(rng, "pool", shape) for _ in range(min(episodes, 64))]
    ctx = mp.get_context("spawn")
    ready, done = ctx.Event(), ctx.Queue()
    worker = ctx.Process(
        target=_ingest_worker,
        args=(settings.model_dump_json(), topic, f"bench-{run}", episodes, ready, done),
        daemon=True,
    )
    worker.start()
    if not ready.wait(120):
        worker.kill()
        raise RuntimeError("the ingest worker did not join its consumer group in 120 s")

    publisher = EpisodePublisher(settings, topic=topic)
    sent_ids, nbytes = set(), 0
    t0 = time.perf_counter()
    for i in range(episodes):
        core, frames, imagined = pool[i % len(pool)]
        core = core.model_copy(update={"episode_id": uuid.UUID(bytes=rng.bytes(16), version=4), "robot_id": f"robot-{i % robots:03d}"})
        episode = publisher.publish(core, frames, imagined)
        sent_ids.add(str(episode.episode_id))
        nbytes += sum(ref.nbytes for ref in episode.refs)
        if progress:
            progress(i + 1)
    publisher.wait_drained(300)
    result = done.get(timeout=600)
    elapsed = time.perf_counter() - t0
    worker.join(10)
    publisher.close()

    index = EpisodeIndex(settings.index_path)
    indexed_ids = index.episode_ids()
    latencies_ms = np.array(index.latencies_s()) * 1000
    index.close()
    return {
        "episodes_sent": len(sent_ids),
        "episodes_indexed": len(set(indexed_ids)),
        "lost": len(sent_ids - set(indexed_ids)),
        "duplicated": len(indexed_ids) - len(set(indexed_ids)) + len(set(indexed_ids) - sent_ids),
        "duplicates_dropped": result["duplicates"],
        "dead_lettered": result["dead_lettered"],
        "episodes_per_s": round(len(indexed_ids) / elapsed, 1),
        "mb_per_s": round(nbytes / elapsed / 1e6, 2),
        "mb_per_episode": round(nbytes / episodes / 1e6, 3),
        "latency_ms_p50": round(float(np.percentile(latencies_ms, 50)), 1),
        "latency_ms_p99": round(float(np.percentile(latencies_ms, 99)), 1),
        "elapsed_s": round(elapsed, 2),
        "shape": shape.__dict__,
        "work_dir": str(Path(work)),
    }
