import sqlite3
from datetime import timedelta

import numpy as np
import pytest

from infra.contracts.episode import Episode
from learner.episode_index import EpisodeIndex, IndexMissing, IndexReader, Provenance
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


def test_duplicates_are_dropped_by_episode_id(tmp_path):
    index = EpisodeIndex(tmp_path / "i.sqlite")
    batch = [(e, Provenance("t", 0, i, 0.0)) for i, e in enumerate(episodes(10))]
    assert index.record(batch) == (10, 0)
    assert index.record(batch[:4]) == (0, 4)
    assert index.count() == 10


def test_index_survives_a_restart_and_answers_queries(tmp_path):
    eps = episodes(30)
    with EpisodeIndex(tmp_path / "i.sqlite") as index:
        index.record([(e, Provenance("t", 0, i, 0.0)) for i, e in enumerate(eps)])
    with pytest.raises(sqlite3.ProgrammingError):  # the block closed it
        index.count()

    index = EpisodeIndex(tmp_path / "i.sqlite")
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


def test_the_dashboards_read_only_reader_answers_as_the_learners_index(tmp_path):
    with pytest.raises(IndexMissing, match="no episode index"):
        IndexReader(tmp_path / "i.sqlite").count()
    with EpisodeIndex(tmp_path / "i.sqlite") as index:
        index.record([(e, Provenance("t", 0, i, 0.0)) for i, e in enumerate(episodes(20))])
        reader = IndexReader(tmp_path / "i.sqlite")
        assert reader.count() == index.count() == 20
        assert reader.per("robot_id") == index.per("robot_id") and len(index.per("robot_id")) > 1
        assert reader.latest(5) == index.latest(5)


def test_rounds_take_new_episodes_by_the_ingest_watermark_whatever_the_robots_clocks_say(tmp_path):
    eps = episodes(12)
    # a robot whose clock is a day behind: by its start times, its episodes look old
    late_clock = [e.model_copy(update={"started_at": e.started_at - timedelta(days=1)}) for e in eps[6:]]
    with EpisodeIndex(tmp_path / "i.sqlite") as index:
        assert index.watermark() is None
        index.record([(e, Provenance("t", 0, i, 100.0 + i)) for i, e in enumerate(eps[:6])])
        first_round = index.watermark()
        index.record([(e, Provenance("t", 0, 6 + i, 200.0 + i)) for i, e in enumerate(late_clock)])
        new = index.query(ingested_after=first_round, ingested_until=index.watermark())
        assert {e.episode_id for e in new} == {e.episode_id for e in late_clock}
        assert index.count(since=eps[5].started_at) == 1  # by the robots' clocks they would be lost
