"""The data plane under hostile input and faults, against the real S3 and Kafka-protocol broker.

Messages here are produced from outside the project's publisher, as anyone with access to the
topic could: each must end on the dead-letter topic with its reason, once, while the good
episodes around it are indexed exactly once and nothing stalls."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import uuid

import numpy as np
import pytest
import zstandard

from fleet_agent.publisher import EpisodePublisher
from infra.clients import kafka_producer, s3_client
from infra.contracts import arrays, video
from infra.contracts.dead_letter import DeadLetter
from infra.contracts.episode import Episode
from learner.episode_index import EpisodeIndex
from learner.ingest import EpisodeIngestor
from learner.reconcile import reconcile
from sim.synthetic import episode_stream
from tests.integration.test_data_plane import SMALL, publish, publisher_message, topic_records

pytestmark = pytest.mark.integration


def hostile_messages(settings, template: Episode) -> dict[str, list[bytes | None]]:
    """Messages no robot of ours would send, by the dead-letter reason each must get."""
    s3, bucket = s3_client(settings), settings.s3.episodes_bucket

    def variant(**media) -> Episode:
        episode_id = uuid.uuid4()
        key = media.pop("key", f"episodes/{template.robot_id}/hostile/{episode_id}.npz.zst")
        return template.model_copy(
            update={"episode_id": episode_id, "media": template.media.model_copy(update={"key": key, **media})}
        )

    def stored(blob: bytes, **media) -> bytes:
        episode = variant(**media)
        s3.put_object(bucket, episode.media.key, io.BytesIO(blob), len(blob))
        return episode.model_dump_json().encode()

    def raw(change) -> bytes:
        data = json.loads(template.model_dump_json())
        change(data)
        return json.dumps(data).encode()  # Python's json writes NaN and Infinity

    wrong_shape = arrays.encode(
        {"executed_frames": np.zeros((2, 4, 4, 3), np.uint8), "imagined_videos": np.zeros((1,), np.uint8)}
    )
    # H.264 that holds two frames where the message declares more: found only by decoding
    declared = template.media.arrays
    lying = io.BytesIO()
    np.savez(
        lying,
        **{
            "executed_frames.h264": np.frombuffer(
                video.encode(np.zeros([2, *declared["executed_frames"].shape[1:]], np.uint8)), np.uint8
            ),
            "executed_frames.shape": np.array(declared["executed_frames"].shape, np.int64),
            "imagined_videos": np.zeros(declared["imagined_videos"].shape, np.uint8),
        },
    )
    lying_video = zstandard.ZstdCompressor().compress(lying.getvalue())
    return {
        "empty": [None, b""],
        "bad_json": [b'{"episode_id": ', b"\x00\xff\xfe not even text", "{\u2603}".encode()],
        "schema": [
            b'{"hello": "world"}',
            raw(lambda d: d["actions"][0].__setitem__(0, float("nan"))),
            raw(lambda d: d.__setitem__("timings_ms", {"imagine": float("inf")})),
            raw(lambda d: d.__setitem__("instruction", "pick up\x00 the cube")),
            raw(lambda d: d["media"].__setitem__("key", f"episodes/{template.robot_id}/../other/x.npz.zst")),
            raw(lambda d: d["media"].__setitem__("key", "episodes/robot-other/x.npz.zst")),
            raw(lambda d: d["media"].__setitem__("key", f"episodes/{template.robot_id}/\u00e9t\u00e9.npz.zst")),
            raw(lambda d: d["media"].__setitem__("bucket", "Bad_Bucket")),
            raw(lambda d: d.__setitem__("actions", [[0.0]] * 10_001)),
        ],
        "media_location": [raw(lambda d: d["media"].__setitem__("bucket", "someone-elses-bucket"))],
        "missing_object": [variant().model_dump_json().encode()],
        "checksum_mismatch": [stored(b"these are not the frames you hashed")],  # a replaced object
        "media_content": [
            stored(wrong_shape, sha256=arrays.sha256(wrong_shape), nbytes=len(wrong_shape)),
            stored(b"not zstd", sha256=arrays.sha256(b"not zstd"), nbytes=8),
            stored(lying_video, sha256=arrays.sha256(lying_video), nbytes=len(lying_video)),
        ],
        "too_large": [variant(nbytes=settings.learner.max_media_bytes + 1).model_dump_json().encode()],
    }


def test_every_hostile_message_is_dead_lettered_once_with_its_reason_and_the_good_ones_flow(plane):
    publisher = EpisodePublisher(plane)
    good = publish(publisher, episode_stream(seed=3, episodes=4, robots=2, shape=SMALL))
    assert publisher.wait_drained(60), publisher.last_error
    template = Episode.model_validate_json(publisher_message(plane, good[0]))
    hostile = hostile_messages(plane, template)
    # An original too large to travel again with its headers: kept in S3, named by the letter.
    oversize = b'{"padding": "' + b"x" * (700 << 10) + b'"}'
    hostile["schema"].append(oversize)

    producer = kafka_producer(plane, max_request_size=2 << 20)
    for values in hostile.values():
        for value in values:
            producer.send(
                plane.kafka.episodes_topic, key=b"hostile", value=value
            )  # kafka-python needs a key or a value
    redelivered = publisher_message(plane, good[1])
    producer.send(plane.kafka.episodes_topic, key=template.robot_id.encode(), value=redelivered)  # a duplicate
    producer.flush(10)
    producer.close()
    good += publish(publisher, episode_stream(seed=4, episodes=4, robots=2, shape=SMALL))
    assert publisher.close(drain_timeout=60), publisher.last_error

    index = EpisodeIndex(plane.index_path)
    ingestor = EpisodeIngestor(plane, index)
    stats = ingestor.run(idle_timeout_s=5)
    ingestor.close()
    assert sorted(index.episode_ids()) == sorted(good) and stats.duplicates == 1

    letters = [
        (DeadLetter.from_headers(r.headers), r.value) for r in topic_records(plane, plane.kafka.dead_letter_topic)
    ]
    by_reason: dict[str, list] = {}
    for letter, value in letters:
        by_reason.setdefault(letter.reason.value, []).append(letter.original or value)
        assert letter.detail, "each letter says what was wrong"
    expected = {reason: [v or b"" for v in values] for reason, values in hostile.items()}
    kept = [v for v in by_reason["schema"] if isinstance(v, str)]
    assert len(kept) == 1 and kept[0].startswith("s3://")
    bucket, _, key = kept[0].removeprefix("s3://").partition("/")
    assert s3_client(plane).get_object(bucket, key).read() == oversize
    by_reason["schema"] = [oversize if isinstance(v, str) else v for v in by_reason["schema"]]
    assert {r: sorted(v) for r, v in by_reason.items()} == {r: sorted(v) for r, v in expected.items()}
    assert stats.dead_lettered == len(letters) == sum(map(len, hostile.values()))


def test_a_learner_killed_between_the_index_commit_and_the_offset_commit_indexes_each_episode_once(plane):
    publisher = EpisodePublisher(plane)
    sent = publish(publisher, episode_stream(seed=6, episodes=20, robots=2, shape=SMALL))
    assert publisher.close(drain_timeout=60), publisher.last_error
    index = EpisodeIndex(plane.index_path)

    class Killed(BaseException):
        pass

    def killed(*_, **__):
        raise Killed

    first = EpisodeIngestor(plane, index)
    first.consumer.commit = killed  # dies after the index transaction, before Kafka hears of it
    with pytest.raises(Killed):
        while True:
            first.poll_once()
    first.consumer.close(autocommit=False)
    indexed_before = index.count()
    assert indexed_before > 0

    second = EpisodeIngestor(plane, index)
    stats = second.run(idle_timeout_s=8)
    second.close()
    assert sorted(index.episode_ids()) == sorted(sent)
    assert stats.duplicates == indexed_before, "what the first had indexed is replayed and dropped by episode_id"


def test_the_shipper_sets_aside_what_it_can_never_ship_and_keeps_going(plane):
    spool_dir = plane.spool_dir
    spool_dir.mkdir(parents=True, exist_ok=True)
    # left by an earlier agent: an entry whose message is not JSON, one whose media are gone, and
    # one bigger than the broker takes
    (spool_dir / "000000000000.json").write_bytes(b"{truncated")
    (spool_dir / "000000000000.media").write_bytes(b"m")
    (spool_dir / "000000000001.json").write_bytes(
        json.dumps({"robot_id": "r", "media": {"key": "episodes/r/x"}}).encode()
    )
    huge = {"robot_id": "r", "media": {"key": "episodes/r/huge", "sha256": "0" * 64}, "padding": "x" * (2 << 20)}
    (spool_dir / "000000000002.json").write_bytes(json.dumps(huge).encode())
    (spool_dir / "000000000002.media").write_bytes(b"m")

    told: list[tuple[str, str]] = []  # what the fleet sends on as telemetry
    publisher = EpisodePublisher(plane, on_quarantined=lambda robot, reason: told.append((robot, reason)))
    sent = publish(publisher, episode_stream(seed=7, episodes=6, robots=2, shape=SMALL))
    assert publisher.close(drain_timeout=60), publisher.last_error
    reasons = publisher.spool.quarantined()
    assert publisher.quarantined == 3 and len(reasons) == 3
    assert sorted(r for _, r in told) == reasons and sorted(robot for robot, _ in told) == ["*", "r", "r"]
    assert sum("unreadable" in r for r in reasons) == 2 and sum("broker" in r for r in reasons) == 1
    assert sorted(os.listdir(spool_dir / "quarantine"))[0] == "000000000000.json"

    index = EpisodeIndex(plane.index_path)
    ingestor = EpisodeIngestor(plane, index)
    ingestor.run(until_indexed=6, idle_timeout_s=20)
    ingestor.close()
    assert sorted(index.episode_ids()) == sorted(sent)


def test_lost_and_duplicated_are_counted_apart_from_the_ingest_path_and_can_be_non_zero(plane):
    acknowledged: list[str] = []
    publisher = EpisodePublisher(plane, on_acknowledged=acknowledged.append)
    sent = publish(publisher, episode_stream(seed=8, episodes=6, robots=2, shape=SMALL))
    assert publisher.close(drain_timeout=60), publisher.last_error
    assert sorted(acknowledged) == sorted(sent)
    index = EpisodeIndex(plane.index_path)
    ingestor = EpisodeIngestor(plane, index)
    ingestor.run(until_indexed=6, idle_timeout_s=20)

    def counts():
        found = reconcile(plane, acknowledged, index)
        return found.lost, found.duplicated, found.indexed

    assert counts() == (0, 0, 6)
    producer = kafka_producer(plane)  # a producer's retry that landed twice
    producer.send(plane.kafka.episodes_topic, key=b"robot-000", value=publisher_message(plane, sent[0]))
    producer.flush(10)
    producer.close()
    assert counts() == (0, 1, 6)
    assert ingestor.run(idle_timeout_s=5).duplicates == 1  # which the index drops
    ingestor.close()
    with sqlite3.connect(plane.index_path) as db:  # an episode the index loses after the fact
        db.execute("DELETE FROM episodes WHERE episode_id = ?", (sent[3],))
    assert counts() == (1, 1, 5)
