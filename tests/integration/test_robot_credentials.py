"""Per-robot S3 keys on the embedded S3: a robot ships its own episodes and can do nothing else."""

from __future__ import annotations

import io

import pytest
from minio.error import S3Error

from fleet_agent.publisher import EpisodePublisher
from infra.clients import s3_client
from infra.errors import UsageError
from infra.stack.credentials import as_robot, robot_credentials
from sim.synthetic import episode_stream
from tests.integration.test_data_plane import SMALL, BackgroundIngest, publish

pytestmark = pytest.mark.integration


def _robot(plane, tmp_path, robot_id: str):
    settings = as_robot(plane, *robot_credentials(plane, robot_id))
    return settings.model_copy(update={"agent": settings.agent.model_copy(update={"spool_dir": tmp_path / robot_id})})


def _denied(action) -> str:
    with pytest.raises(S3Error) as refused:
        action()
    return refused.value.code


def test_a_robots_key_ships_its_own_episodes_and_can_do_nothing_else(plane, tmp_path):
    # episode_stream names its robots robot-000, robot-001, ...
    robot_a, robot_b = _robot(plane, tmp_path, "robot-000"), _robot(plane, tmp_path, "robot-001")
    assert robot_a.s3_credentials() != robot_b.s3_credentials() != plane.s3_credentials()
    episodes = list(episode_stream(seed=7, episodes=6, robots=2, shape=SMALL))
    ingest = BackgroundIngest(plane)  # the learner reads with the platform's key
    sent = []
    for robot, mine in ((robot_a, episodes[0::2]), (robot_b, episodes[1::2])):
        publisher = EpisodePublisher(robot)
        sent += publish(publisher, mine)
        assert publisher.close(drain_timeout=60), publisher.last_error
    assert ingest.wait_for(6, timeout=120) == 6
    ingest.close()
    b_episode = next(e for e in ingest.index.query() if e.robot_id == "robot-001")
    a_episode = next(e for e in ingest.index.query() if e.robot_id == "robot-000")

    s3, bucket = s3_client(robot_a), plane.s3.episodes_bucket
    assert _denied(lambda: s3.get_object(bucket, b_episode.media.key).read()) == "AccessDenied"
    assert _denied(lambda: s3.get_object(bucket, a_episode.media.key).read()) == "AccessDenied"  # write-only
    overwrite = lambda: s3.put_object(bucket, b_episode.media.key, io.BytesIO(b"forged"), 6)  # noqa: E731
    assert _denied(overwrite) == "AccessDenied"
    assert _denied(lambda: list(s3.list_objects(bucket, prefix="episodes/", recursive=True))) == "AccessDenied"
    assert _denied(lambda: s3.put_object(plane.s3.mlflow_bucket, "x", io.BytesIO(b"x"), 1)) == "AccessDenied"
    assert s3_client(plane).get_object(bucket, b_episode.media.key).read()  # the episode is intact

    assert robot_credentials(plane, "robot-000") == robot_a.s3_credentials()  # the same keys on every request
    with pytest.raises(UsageError, match="robot id"):
        robot_credentials(plane, "../robot-001")
