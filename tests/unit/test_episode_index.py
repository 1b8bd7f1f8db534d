import math
import sqlite3
from datetime import timedelta

import numpy as np
import psycopg
import pytest

from infra.clients import ServiceUnavailable
from infra.contracts.episode import Episode
from learner.episode_index import EpisodeIndex, IndexMissing, Provenance, open_index, open_reader
from sim.synthetic import synthetic_core


def episodes(n: int, seed: int = 0) -> list[Episode]:
    rng = np.random.default_rng(seed)
    spec = {"shape": [1], "dtype": "uint8"}
    ref = {
        "bucket": "fleet-episodes",
        "sha256": "0" * 64,
        "nbytes": 1,
        "arrays": {"executed_frames": spec, "imagined_videos": spec},
    }
    out = []
    for i in range(n):
        core = synthetic_core(rng, f"robot-{i % 3}", policy_version=f"v{i % 2}")
        shift = timedelta(seconds=i)
        core = core.model_copy(update={"started_at": core.started_at + shift, "ended_at": core.ended_at + shift})
        media = ref | {"key": core.media_key()}
        out.append(Episode(**core.model_dump(), media=media, published_at=core.ended_at))
    return out


def test_duplicates_are_dropped_by_episode_id(index_settings):
    index = open_index(index_settings)
    batch = [(e, Provenance("t", 0, i, 0.0)) for i, e in enumerate(episodes(10))]
    assert index.record(batch) == (10, 0)
    assert index.record(batch[:4] + [(e, Provenance("t", 0, 10 + i, 0.0)) for i, e in enumerate(episodes(2, 9))]) == (
        2,
        4,
    )
    assert index.count() == 12


def test_index_survives_a_restart_and_answers_queries(index_settings):
    eps = episodes(30)
    with open_index(index_settings) as index:
        index.record([(e, Provenance("t", 0, i, 0.0)) for i, e in enumerate(eps)])
    with pytest.raises((sqlite3.ProgrammingError, psycopg.InterfaceError)):  # the block closed it
        index.count()

    index = open_index(index_settings)
    assert index.count() == 30
    assert index.count(robot_id="robot-1") == sum(e.robot_id == "robot-1" for e in eps)
    assert index.count(policy_version="v0", success=True) == sum(
        e.model_versions.policy == "v0" and e.success for e in eps
    )
    task = eps[0].task_id
    assert {str(e.episode_id) for e in index.query(task_id=task)} == {
        str(e.episode_id) for e in eps if e.task_id == task
    }
    since = eps[10].started_at
    assert index.count(since=since, until=eps[20].started_at) == 10
    assert index.query(limit=1)[0] == eps[0]


def test_the_dashboards_reader_answers_as_the_learners_index(index_settings):
    with pytest.raises(IndexMissing, match="no episode index"):
        open_reader(index_settings).count()
    eps = episodes(20)
    with open_index(index_settings) as index:
        index.record([(e, Provenance("t", 0, i, 0.0)) for i, e in enumerate(eps)])
        reader = open_reader(index_settings)
        assert reader.count() == index.count() == 20
        assert reader.per("robot_id") == index.per("robot_id") and len(index.per("robot_id")) > 1
        assert reader.latest(5) == index.latest(5)


def test_the_aggregates_count_what_was_recorded(index_settings):
    """The dashboard's figures on either store: per-key counts, the latest version, the timeline."""
    eps = episodes(40)
    with open_index(index_settings) as index:
        index.record([(e, Provenance("t", 0, i, 100.0 + i)) for i, e in enumerate(eps)])
        per_robot = {row[0]: row for row in index.per("robot_id")}
        for robot in {e.robot_id for e in eps}:
            mine = [e for e in eps if e.robot_id == robot]
            last = max(mine, key=lambda e: e.ended_at)
            assert per_robot[robot][1:] == (
                len(mine),
                sum(e.success for e in mine),
                pytest.approx(last.ended_at.timestamp()),
                last.model_versions.policy,
            )
        width, buckets = index.success_timeline(buckets=8)
        expected: dict[tuple, list[int]] = {}
        for e in eps:  # each episode in the bucket its start time falls in: truncated, not rounded
            key = (math.floor(e.started_at.timestamp() / width) * width, e.model_versions.policy)
            expected.setdefault(key, [0, 0])
            expected[key][0] += 1
            expected[key][1] += int(e.success)
        assert {(start, version): [n, s] for start, version, n, s in buckets} == expected
        assert sorted(index.latencies_s()) == pytest.approx(
            sorted(100.0 + i - e.published_at.timestamp() for i, e in enumerate(eps))
        )
        assert len(index.by_ids([str(e.episode_id) for e in eps[:5]] + ["not-an-id"])) == 5


def test_rounds_take_new_episodes_by_the_ingest_watermark_whatever_the_robots_clocks_say(index_settings):
    eps = episodes(12)
    # a robot whose clock is a day behind: by its start times, its episodes look old
    late_clock = [e.model_copy(update={"started_at": e.started_at - timedelta(days=1)}) for e in eps[6:]]
    with open_index(index_settings) as index:
        assert index.watermark() is None
        index.record([(e, Provenance("t", 0, i, 100.0 + i)) for i, e in enumerate(eps[:6])])
        first_round = index.watermark()
        index.record([(e, Provenance("t", 0, 6 + i, 200.0 + i)) for i, e in enumerate(late_clock)])
        new = index.query(ingested_after=first_round, ingested_until=index.watermark())
        assert {e.episode_id for e in new} == {e.episode_id for e in late_clock}
        assert index.count(since=eps[5].started_at) == 1  # by the robots' clocks they would be lost


def test_an_index_made_before_rollups_gets_them_from_its_rows(index_settings):
    eps = episodes(25)
    with open_index(index_settings) as index:
        index.record([(e, Provenance("t", 0, i, 0.0)) for i, e in enumerate(eps)])
        before = (index.count(), index.per("robot_id"), index.per("policy_version"), index.success_timeline())
    _drop_rollups(index_settings)  # what an index file from before them holds: the episodes alone
    with open_index(index_settings) as index:
        assert (index.count(), index.per("robot_id"), index.per("policy_version"), index.success_timeline()) == before
        index.record([(e, Provenance("t", 0, 25 + i, 0.0)) for i, e in enumerate(episodes(5, seed=1))])
        assert index.count() == 30  # and the trigger counts what comes after


def _drop_rollups(settings) -> None:
    drops = ["DROP TRIGGER episodes_rollup", "DROP TABLE rollup_time", "DROP TABLE rollup_key"]
    if settings.index_url is None:
        with sqlite3.connect(settings.index_path) as db:
            for statement in drops:
                db.execute(statement)
        return
    drops[0] += " ON episodes"
    options = f"-c search_path={settings.learner.index_schema}"
    with psycopg.connect(settings.index_url, autocommit=True, options=options) as db:
        for statement in [*drops, "DROP FUNCTION episodes_rollup"]:
            db.execute(statement)


def test_a_second_writer_of_one_sqlite_file_waits_and_is_told_to_use_postgres(tmp_path):
    first, second = EpisodeIndex(tmp_path / "i.sqlite"), EpisodeIndex(tmp_path / "i.sqlite")
    first._db.execute("BEGIN IMMEDIATE")  # the other learner, mid-batch
    with pytest.raises(ServiceUnavailable, match="locked by another writer") as refused:
        second.record([(e, Provenance("t", 0, 0, 0.0)) for e in episodes(1)])
    assert "FLEET_LEARNER__INDEX_URL" in refused.value.hint  # and the ingest loop retries the batch
    first._db.execute("ROLLBACK")
    assert second.record([(e, Provenance("t", 0, 0, 0.0)) for e in episodes(1)]) == (1, 0)
