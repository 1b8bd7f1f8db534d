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

from benchmarks import BenchResult
from benchmarks.machine_speed import reference_ms
from benchmarks.scratch import BENCH_PREFIX, remove_run
from fleet_agent.publisher import EpisodePublisher
from infra import stack
from infra.settings import Settings
from learner.episode_index import open_index
from learner.ingest import EpisodeIngestor
from learner.reconcile import reconcile
from sim.synthetic import EpisodeShape, episode_stream


def _ingest_worker(settings: Settings, expected: int, ready, done) -> None:
    batches_at: list[float] = []
    with open_index(settings) as index:
        ingestor = EpisodeIngestor(settings, index)
        try:
            ingestor.join_group()  # learners run long before and after a benchmark: a join is not lag
            ready.set()
            cpu_start = time.process_time()
            stats = ingestor.run(
                until_indexed=expected, idle_timeout_s=120, on_batch=lambda *_: batches_at.append(time.monotonic())
            )
            cpu_s = time.process_time() - cpu_start
        finally:
            ingestor.close()
    done.put(
        {
            "indexed": stats.indexed,
            "duplicates": stats.duplicates,
            "dead_lettered": stats.dead_lettered,
            "cpu_s": cpu_s,
            "longest_quiet_s": _longest_quiet_s(batches_at),
            "pauses": stats.pauses,
            "offset_gaps_waited": ingestor.gaps.waited,
            "offset_gaps_skipped": ingestor.gaps.skipped,
        }
    )


def _longest_quiet_s(times: list[float]) -> float:
    """The longest interval between two consecutive events: where a stall shows."""
    return round(float(np.diff(times).max()), 3) if len(times) > 1 else 0.0


def _services_cpu_s(settings: Settings) -> dict[str, float | None]:
    return {name: stack.cpu_seconds(settings, name) for name in ("s3", "kafka")}


class IngestBench(BenchResult):
    episodes_sent: int
    episodes_indexed: int
    lost: int
    duplicated: int
    duplicates_dropped: int
    dead_lettered: int
    episodes_per_s: float
    mb_per_s: float
    mb_per_episode: float
    latency_ms_p50: float
    latency_ms_p99: float
    elapsed_s: float
    offered_rate: float | None
    media_codec: str
    encode_ms_per_episode: float  # the robot's work, on this machine's cores
    encoded_ahead: bool  # whether that work was done before the clock started
    # S3 objects the publisher wrote: fewer than episodes when it packed each robot's backlog
    # (agent.pack_max_bytes; 0 = one object per episode)
    s3_objects_put: int
    # CPU seconds each part used while the clock ran (the services' only when this stack
    # started them): where the two cores went
    cpu_s: dict[str, float | None]
    # Where a stall would show, and which side had it: the longest time without an acknowledgement
    # to the publisher and without a batch in the ingest worker; the publisher's retried
    # shipments, the worker's retried batches by error, the partitions held at an offset gap.
    stalls: dict
    # A fixed piece of work timed just before the clock and just after the run (ms, lower is
    # faster; benchmarks/machine_speed.py): runs are comparable when these are.
    machine_reference_ms: tuple[float, float]
    shape: dict
    work_dir: str | None  # the run's spool and index, when kept


def bench_ingest(
    settings: Settings,
    episodes: int = 1000,
    robots: int = 20,
    camera_noise: float = 2.0,
    rate: float | None = None,
    codec: str | None = "h264",
    encode_ahead: bool = True,
    keep: bool = False,
    progress=None,
) -> IngestBench:
    """Send `episodes` as fast as possible (or at `rate` per second) and measure what arrives.
    `codec` overrides the agent's `media_codec` (None keeps it). The defaults are a camera fleet's:
    a camera's sensor noise makes exact frames 20 times larger than H.264 (README, "Frames as
    video"), so such a fleet ships video. Encoding an episode's media is the robot's work, on the
    robot's CPU: `encode_ahead` does it for every episode before the clock starts, so that the
    figures are the data plane's alone on these cores; the encoding time is reported either way.
    What the run made (topics, media, spool and index) is removed at the end unless `keep`."""
    run = uuid.uuid4().hex[:8]
    work = settings.state_dir / "bench" / f"ingest-{run}"
    settings = settings.isolated(f"{BENCH_PREFIX}{run}", work)
    if codec:
        settings = settings.model_copy(update={"agent": settings.agent.model_copy(update={"media_codec": codec})})
    stack.up(settings, services=("s3", "kafka"))

    shape = EpisodeShape(camera_noise=camera_noise)
    stream = list(episode_stream(seed=0, episodes=episodes, robots=robots, shape=shape))
    ctx = mp.get_context("spawn")
    ready, done = ctx.Event(), ctx.Queue()
    worker = ctx.Process(
        target=_ingest_worker,
        args=(settings, episodes, ready, done),
        daemon=True,
    )
    worker.start()
    if not ready.wait(120):
        worker.kill()
        raise RuntimeError("the ingest worker did not join its consumer group in 120 s")

    acknowledged: list[str] = []
    acknowledged_at: list[float] = []

    def on_acknowledged(episode_id: str) -> None:
        acknowledged.append(episode_id)
        acknowledged_at.append(time.monotonic())

    publisher = EpisodePublisher(settings, on_acknowledged=on_acknowledged)
    sent_ids, nbytes, encode_s = set(), 0, 0.0

    def encoded(frames, imagined):
        nonlocal encode_s
        start = time.perf_counter()
        media = publisher.encode(frames, imagined)
        encode_s += time.perf_counter() - start
        return media

    encoding = ((core, encoded(frames, imagined)) for core, frames, imagined in stream)
    if encode_ahead:
        encoding = list(encoding)  # now, not inside the clock
    reference_before = reference_ms()
    services_cpu = _services_cpu_s(settings)
    publisher_cpu = time.process_time()
    t0 = time.perf_counter()
    for i, (core, media) in enumerate(encoding):
        if rate:
            time.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        episode = publisher.publish_encoded(core, media)
        sent_ids.add(str(episode.episode_id))
        nbytes += episode.media.nbytes
        if progress:
            progress(i + 1)
    publisher.wait_drained(300)
    result = done.get(timeout=600)
    elapsed = time.perf_counter() - t0
    cpu_s = {"publisher": time.process_time() - publisher_cpu, "ingest": result["cpu_s"]}
    for name, after in _services_cpu_s(settings).items():
        before = services_cpu[name]
        cpu_s[name] = None if after is None or before is None else after - before
    worker.join(10)
    stalls = {
        "longest_s_without_an_acknowledgement": _longest_quiet_s(acknowledged_at),
        "longest_s_without_an_ingested_batch": result["longest_quiet_s"],
        "publisher_retries": publisher.retries,
        "ingest_pauses": result["pauses"],
        "offset_gaps_waited": result["offset_gaps_waited"],
        "offset_gaps_skipped": result["offset_gaps_skipped"],
    }
    publisher.close()
    reference_after = reference_ms()

    with open_index(settings) as index:
        indexed_ids = index.episode_ids()
        latencies_ms = np.array(index.latencies_s()) * 1000
        # lost and duplicated from a reader independent of the ingest path (learner/reconcile.py)
        counts = reconcile(settings, set(acknowledged) | sent_ids, index)
    result = IngestBench(
        episodes_sent=len(sent_ids),
        episodes_indexed=counts.indexed,
        lost=counts.lost,
        duplicated=counts.duplicated,
        duplicates_dropped=result["duplicates"],
        dead_lettered=result["dead_lettered"],
        episodes_per_s=round(len(indexed_ids) / elapsed, 1),
        mb_per_s=round(nbytes / elapsed / 1e6, 2),
        mb_per_episode=round(nbytes / episodes / 1e6, 3),
        latency_ms_p50=round(float(np.percentile(latencies_ms, 50)), 1),
        latency_ms_p99=round(float(np.percentile(latencies_ms, 99)), 1),
        elapsed_s=round(elapsed, 2),
        offered_rate=rate,
        media_codec=settings.agent.media_codec,
        encode_ms_per_episode=round(encode_s / episodes * 1000, 2),
        encoded_ahead=encode_ahead,
        s3_objects_put=publisher.objects_put,
        cpu_s={name: None if v is None else round(v, 2) for name, v in cpu_s.items()},
        stalls=stalls,
        machine_reference_ms=(reference_before, reference_after),
        shape=shape.__dict__,
        work_dir=str(Path(work)) if keep else None,
    )
    if not keep:
        remove_run(settings, work)
    return result
