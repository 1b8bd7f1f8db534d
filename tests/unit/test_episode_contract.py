import io
import json
import uuid

import numpy as np
import pytest
import zstandard
from pydantic import ValidationError

from infra.contracts import arrays
from infra.contracts.episode import SCHEMA_PATH, Decision, Episode, json_schema
from infra.contracts.telemetry import EpisodeTelemetry, Heartbeat, read_telemetry
from sim.synthetic import EpisodeShape, synthetic_core


def an_episode() -> Episode:
    core = synthetic_core(np.random.default_rng(1), "robot-1")
    return Episode(**core.model_dump(), media=media_ref(), published_at=core.ended_at)


def media_ref(**change) -> dict:
    spec = {"shape": [1], "dtype": "uint8"}
    ref = {"bucket": "fleet-episodes", "key": "episodes/robot-1/e.npz.zst", "sha256": "0" * 64, "nbytes": 1}
    return ref | {"arrays": {"executed_frames": spec, "imagined_videos": spec}} | change


def test_checked_in_json_schema_matches_the_model():
    assert json.loads(SCHEMA_PATH.read_text()) == json.loads(json.dumps(json_schema(), sort_keys=True)), (
        "run `fleet contracts export` and commit infra/contracts/episode.schema.json"
    )


def test_episode_round_trips_through_json():
    episode = an_episode()
    assert Episode.model_validate_json(episode.model_dump_json()) == episode


@pytest.mark.parametrize(
    "change",
    [
        {"schema_version": 2},
        {"episode_id": "not-a-uuid"},
        {"robot_id": ""},
        {"unexpected_field": 1},
        {"success_source": "guess"},
        {"robot_id": "../robot-2"},
        {"task_id": "x" * 129},
        {"instruction": "pick up\x00 the cube"},
        {"actions": [[0.1, float("nan")]]},
        {"actions": [[float("inf")]]},
        {"actions": [[0.0]] * 10_001},
        {"timings_ms": {"imagine": float("-inf")}},
        {"rejections": {f"r{i}": 1 for i in range(257)}},
        {"media": media_ref(key="episodes/robot-2/e.npz.zst")},  # another robot's object
        {"media": media_ref(key="episodes/robot-1/../robot-2/e.npz.zst")},
        {"media": media_ref(key="episodes/robot-1//e.npz.zst")},
        {"media": media_ref(key="episodes/robot-1/é.npz.zst")},
        {"media": media_ref(bucket="Not_A_Bucket")},
        {"media": media_ref(offset=-1)},
        {"media": media_ref(offset=(1 << 40) + 1)},
        {"media": media_ref(arrays={"executed_frames": {"shape": [1], "dtype": "object"}})},
        {"media": media_ref(arrays={"executed_frames": {"shape": [1] * 9, "dtype": "uint8"}})},
    ],
)
def test_invalid_episodes_are_refused(change):
    data = json.loads(an_episode().model_dump_json()) | change
    with pytest.raises(ValidationError):
        Episode.model_validate(data)


def test_nan_in_a_message_is_refused_as_it_arrives_in_json():
    # Python's json writes NaN and Infinity, and pydantic's parser reads them: the contract refuses
    nan = json.loads(an_episode().model_dump_json())
    nan["decisions"][0]["latency_ms"] = float("nan")
    with pytest.raises(ValidationError, match="finite"):
        Episode.model_validate_json(json.dumps(nan))


def test_episode_cannot_end_before_it_starts():
    data = json.loads(an_episode().model_dump_json())
    data["ended_at"] = "2000-01-01T00:00:00Z"
    with pytest.raises(ValidationError, match="before started_at"):
        Episode.model_validate(data)


def test_chosen_candidate_must_exist():
    with pytest.raises(ValidationError, match="not among the candidates"):
        Decision(step=0, candidates=[{"index": 0}], chosen=3, latency_ms=1.0)


def test_the_chosen_candidate_is_found_among_the_videos_of_the_last_sampling_round():
    k = 4
    resampled = Decision(step=0, candidates=[{"index": i} for i in range(8)], chosen=6, resamples=1, latency_ms=1.0)
    assert resampled.stored_chosen(k) == 2  # the media keep the second round's 4 videos
    assert Decision(step=0, candidates=[{"index": 1}], chosen=1, latency_ms=1.0).stored_chosen(k) == 1
    assert Decision(step=0, candidates=[{"index": 0}], chosen=None, latency_ms=1.0).stored_chosen(k) is None
    # an earlier round's candidate is not stored
    early = Decision(step=0, candidates=[{"index": i} for i in range(8)], chosen=1, resamples=1, latency_ms=1.0)
    assert early.stored_chosen(k) is None


def test_tampered_checksum_format_is_refused():
    data = json.loads(an_episode().model_dump_json())
    data["media"]["sha256"] = "xyz"
    with pytest.raises(ValidationError):
        Episode.model_validate(data)


def test_media_must_name_every_array():
    data = json.loads(an_episode().model_dump_json())
    data["media"] = media_ref(arrays={"executed_frames": {"shape": [1], "dtype": "uint8"}})
    with pytest.raises(ValidationError, match="imagined_videos"):
        Episode.model_validate(data)


def test_media_round_trip_exactly():
    rng = np.random.default_rng(0)
    media = {"frames": rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8), "actions": rng.normal(size=(4, 2))}
    blob = arrays.encode(media)
    decoded = arrays.decode(blob)
    assert decoded.keys() == media.keys()
    assert all(np.array_equal(decoded[k], media[k]) for k in media)
    assert arrays.sha256(blob) == arrays.sha256(arrays.encode(media))


def test_media_decoding_stops_at_its_cap():
    bomb = arrays.encode({"zeros": np.zeros((64, 1024, 1024), np.uint8)})  # 64 MiB of zeros
    assert len(bomb) < 64 * 1024
    with pytest.raises(arrays.TooLarge):
        arrays.decode(bomb, max_bytes=16 << 20)
    raw = io.BytesIO()
    np.savez(raw, zeros=np.zeros(64 << 20, np.uint8))
    silent = zstandard.ZstdCompressor(write_content_size=False).compress(raw.getvalue())  # size not declared
    with pytest.raises(arrays.TooLarge):
        arrays.decode(silent, max_bytes=16 << 20)
    buf = io.BytesIO()
    np.savez_compressed(buf, zeros=np.zeros(1 << 20, np.uint8))  # deflated inside the archive
    with pytest.raises(ValueError, match="stored"):
        arrays.decode(zstandard.ZstdCompressor().compress(buf.getvalue()))


def test_object_arrays_are_never_encoded_or_unpickled():
    with pytest.raises(ValueError, match="cannot travel"):
        arrays.encode({"x": np.array([{"a": 1}], dtype=object)})
    buf = io.BytesIO()
    np.savez(buf, x=np.array([uuid.uuid4()], dtype=object))  # what an attacker could upload
    with pytest.raises(ValueError, match="pickle"):
        arrays.decode(zstandard.ZstdCompressor().compress(buf.getvalue()))


def test_an_episodes_telemetry_summarises_its_own_decisions():
    core = synthetic_core(np.random.default_rng(4), "robot-001", EpisodeShape(decisions=5, candidates=3))
    latencies = [d.latency_ms for d in core.decisions]
    summary = EpisodeTelemetry.of(core)
    assert (summary.robot_id, summary.episode_id, summary.success) == (core.robot_id, core.episode_id, core.success)
    assert summary.policy_version == core.model_versions.policy
    assert (summary.decisions, summary.candidates) == (5, 15)
    assert summary.rejections == sum(core.rejections.values())
    assert summary.decision_ms_p50 == round(float(np.percentile(latencies, 50)), 1)
    assert summary.decision_ms_p95 == round(float(np.percentile(latencies, 95)), 1)
    assert EpisodeTelemetry.of(core, policy_version="mixed").policy_version == "mixed"


@pytest.mark.parametrize(
    "value",
    [None, b"{not json", b"\xff\xfe", b"[1, 2]", b'{"kind": ["episode"]}', b'{"kind": "heartbeat"}'],
    ids=["tombstone", "not-json", "not-utf8", "not-an-object", "unhashable-kind", "not-its-contract"],
)
def test_a_record_that_is_not_telemetry_is_a_value_error_whatever_is_wrong_with_it(value):
    # readers catch ValueError alone: any other error type here would end their poll
    with pytest.raises(ValueError):
        read_telemetry(value)


def test_telemetry_of_a_kind_these_contracts_do_not_define_is_passed_over():
    assert read_telemetry(b'{"kind": "battery", "robot_id": "robot-1"}') is None
    heartbeat = Heartbeat(robot_id="robot-1", policy_version="3", episodes=2)
    assert read_telemetry(heartbeat.model_dump_json().encode()) == heartbeat
