"""The episode index on a real PostgreSQL server: ingest into it, and several learners sharing it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from fleet_agent.publisher import EpisodePublisher
from learner.episode_index import IndexMissing, open_reader
from learner.reconcile import reconcile
from sim.synthetic import episode_stream
from tests.conftest import cli_env
from tests.integration.test_data_plane import SMALL, BackgroundIngest, publish

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_plane(plane, postgres):
    """This test's topics and consumer group, its index in its own schema on the PostgreSQL server,
    given as a plain URL, as a production learner is."""
    url = SecretStr(postgres.index_url)
    return plane.model_copy(update={"learner": plane.learner.model_copy(update={"index_url": url})})


def test_episodes_ingested_into_postgres_arrive_once_each(pg_plane):
    acknowledged: list[str] = []
    ingest = BackgroundIngest(pg_plane)
    publisher = EpisodePublisher(pg_plane, on_acknowledged=acknowledged.append)
    sent = publish(publisher, episode_stream(seed=3, episodes=300, robots=10, shape=SMALL))
    assert publisher.close(drain_timeout=180), publisher.last_error
    assert ingest.wait_for(300, timeout=180) == 300
    ingest.close()
    assert sorted(ingest.index.episode_ids()) == sorted(sent)
    counts = reconcile(pg_plane, acknowledged, open_reader(pg_plane))
    assert (counts.acknowledged, counts.indexed, counts.lost, counts.duplicated) == (300, 300, 0, 0)


def _start_learner(settings, logs: Path) -> subprocess.Popen:
    logs.mkdir()
    args = [sys.executable, "-m", "cli", "episodes", "ingest"]
    with (logs / "stdout").open("w") as out, (logs / "stderr").open("w") as err:
        return subprocess.Popen(args, stdout=out, stderr=err, text=True, env=cli_env(settings))


def _wait(condition, timeout: float, what: str, learners) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for learner in learners:
            assert learner.poll() is None or learner.returncode == -9, f"a learner exited ({learner.returncode})"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_two_learners_in_one_group_one_killed_mid_run_lose_and_duplicate_nothing(pg_plane, tmp_path):
    """Two `fleet episodes ingest` processes share the topic's partitions and one index. One is
    killed with SIGKILL while episodes stream in; the other takes over its partitions from the
    last committed offsets. Counted by the independent reconciler: nothing lost, nothing twice."""
    acknowledged: list[str] = []
    publisher = EpisodePublisher(pg_plane, on_acknowledged=acknowledged.append)
    stream = episode_stream(seed=4, episodes=3000, robots=12, shape=SMALL)
    reader = open_reader(pg_plane)
    first = _start_learner(pg_plane, tmp_path / "first")
    learners = [first]
    stop = threading.Event()
    sent: list[str] = []
    streaming = threading.Thread(target=_publish_until, args=(publisher, stream, stop, sent), daemon=True)
    try:
        streaming.start()
        _wait(lambda: _indexed(reader) >= 50, 120, "the first learner to index", learners)
        second = _start_learner(pg_plane, tmp_path / "second")
        learners.append(second)
        # the group has rebalanced: the second learner has indexed from its own share of the partitions
        _wait(
            lambda: "indexed" in (tmp_path / "second" / "stdout").read_text(), 120, "a share for the second", learners
        )
        first.kill()  # SIGKILL: mid-batch, no offset commit, no goodbye to the group
        assert first.wait(30) == -9
        time.sleep(5)  # episodes keep coming, on every partition, with only the second learner left
        stop.set()
        streaming.join(60)
        assert publisher.close(drain_timeout=180), publisher.last_error
        _wait(lambda: _indexed(reader) >= len(sent), 180, f"all {len(sent)} episodes to be indexed", learners)
    finally:
        stop.set()
        for learner in learners:
            learner.kill()
    counts = reconcile(pg_plane, acknowledged, reader)
    assert (counts.acknowledged, counts.indexed, counts.lost, counts.duplicated) == (len(sent), len(sent), 0, 0)
    assert reader.count() == len(sent) > 100


def _indexed(reader) -> int:
    try:
        return reader.count()
    except IndexMissing:  # the first learner has not created the tables yet
        return 0


def _publish_until(publisher: EpisodePublisher, stream, stop: threading.Event, sent: list[str]) -> None:
    """About 50 episodes a second until told to stop, so that the kill lands while batches are in flight."""
    for i, episode in enumerate(stream):
        if stop.is_set():
            return
        sent.append(str(publisher.publish(*episode).episode_id))
        if i % 5 == 4:
            time.sleep(0.1)
