"""`fleet bench ingest` on a few episodes: it counts what arrived and says where the CPU went."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.ingest import bench_ingest

pytestmark = pytest.mark.integration


def test_the_ingest_bench_counts_every_episode_and_each_parts_cpu(services, bench_leftovers):
    before = bench_leftovers()
    result = bench_ingest(services, episodes=40, robots=4, codec="h264", encode_ahead=True)
    assert bench_leftovers() == before, "its topics and media are removed when it ends"
    assert result.work_dir is None
    assert (result.episodes_sent, result.episodes_indexed, result.lost, result.duplicated) == (40, 40, 0, 0)
    assert result.media_codec == "h264" and result.encoded_ahead and result.mb_per_episode < 0.2
    # this stack started S3 and the broker, so their CPU is read from /proc as well as ours
    assert set(result.cpu_s) == {"publisher", "ingest", "s3", "kafka"}
    cpu = result.cpu_s
    assert cpu["publisher"] > 0 and cpu["ingest"] > 0 and cpu["s3"] > 0, cpu  # S3: ~0.1 s for 40 PUTs and GETs
    assert cpu["kafka"] is not None and cpu["kafka"] >= 0, cpu  # a few ms: it may round to no clock tick
    assert all(ms > 0 for ms in result.machine_reference_ms)
    # nothing stalled: no retried shipment or batch, no partition held at an offset gap for good
    stalls = result.stalls
    assert stalls["publisher_retries"] == 0 and stalls["ingest_pauses"] == {} and stalls["offset_gaps_skipped"] == 0
    for side in ("longest_s_without_an_acknowledgement", "longest_s_without_an_ingested_batch"):
        assert 0 <= stalls[side] <= result.elapsed_s, stalls


def test_a_kept_run_leaves_its_topics_media_and_index_for_inspection(services, bench_leftovers):
    topics, objects = bench_leftovers()
    result = bench_ingest(services, episodes=12, robots=2, keep=True)
    now_topics, now_objects = bench_leftovers()
    kept_topics, kept_objects = now_topics - topics, now_objects - objects
    assert sorted(t.rsplit(".", 1)[-1] for t in kept_topics) == ["dlq", "episodes", "rollouts", "telemetry"]
    assert len(kept_objects) >= 2, "at least one pack per robot"
    assert (Path(result.work_dir) / "index.sqlite").exists()
