"""Curation keeps exactly the episodes it should, on a hand-built set with media in real S3."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import pytest

from infra.clients import s3_client
from infra.contracts import arrays
from infra.contracts.episode import ArraySpec, CandidateRecord, Decision, Episode, MediaRef
from learner.curation import CurationConfig, curate, load_manifest, save_manifest
from learner.dataset import fleet_clip
from sim.synthetic import EpisodeShape, render_clip, synthetic_core

pytestmark = pytest.mark.integration

K, F, STEPS = 4, 3, 12


def _episode(settings, rng, success: bool, imagine, chosen: int | None = 1, resamples: int = 0) -> Episode:
    """An episode with two decisions; `imagine(real_future, start)` makes the chosen candidate."""
    executed = render_clip(rng, STEPS, 32, noise=0)
    decisions, imagined = [], np.zeros((2, K, F, 32, 32, 3), np.uint8)
    for i, step in enumerate((0, 5)):
        noise = rng.integers(0, 255, (K, F, 32, 32, 3), dtype=np.uint8)  # the candidates not chosen
        imagined[i] = noise
        if chosen is not None:
            imagined[i, chosen] = imagine(executed[step + 1 : step + 1 + F], executed[step])
        total = K * (resamples + 1)
        decisions.append(
            Decision(
                step=step,
                candidates=[CandidateRecord(index=j) for j in range(total)],
                chosen=None if chosen is None else chosen + resamples * K,
                resamples=resamples,
                latency_ms=1.0,
            )
        )
    core = synthetic_core(rng, "robot-000", EpisodeShape()).model_copy(
        update={"success": success, "decisions": decisions}
    )
    media = {"executed_frames": executed, "imagined_videos": imagined}
    blob = arrays.encode(media)
    key = core.media_key()
    s3_client(settings).put_object(settings.s3.episodes_bucket, key, io.BytesIO(blob), len(blob))
    ref = MediaRef(
        bucket=settings.s3.episodes_bucket,
        key=key,
        sha256=arrays.sha256(blob),
        nbytes=len(blob),
        arrays={k: ArraySpec(shape=list(v.shape), dtype=v.dtype.name) for k, v in media.items()},
    )
    return Episode(**core.model_dump(), media=ref, published_at=datetime.now(UTC))


def as_imagined(future, start):
    return future


def opposite(future, start):  # the scene moving the other way
    return np.clip(2 * start.astype(int) - future.astype(int), 0, 255).astype(np.uint8)


def test_curation_keeps_consistent_successes_for_training_and_failures_for_the_critic(plane):
    rng = np.random.default_rng(0)
    kept = _episode(plane, rng, True, as_imagined)
    kept_after_resample = _episode(plane, rng, True, as_imagined, chosen=2, resamples=1)
    not_as_imagined = _episode(plane, rng, True, opposite)
    nothing_chosen = _episode(plane, rng, True, as_imagined, chosen=None)
    failures = [_episode(plane, rng, False, as_imagined), _episode(plane, rng, False, opposite)]

    manifest = curate(
        plane,
        [kept, kept_after_resample, not_as_imagined, nothing_chosen, *failures],
        CurationConfig(consistency_threshold=0.5),
    )

    train = {e.episode_id: e for e in manifest.of_role("world_model_and_idm")}
    assert set(train) == {str(kept.episode_id), str(kept_after_resample.episode_id)}
    assert all(e.consistency > 0.99 for e in train.values())
    assert {e.episode_id for e in manifest.of_role("critic_negative")} == {str(f.episode_id) for f in failures}
    assert manifest.dropped_inconsistent == 2 and manifest.considered == 6
    assert train[str(kept.episode_id)].media_sha256 == kept.media.sha256

    uri = save_manifest(plane, manifest)
    assert uri.endswith(f"{manifest.manifest_id}.json")
    assert load_manifest(plane, uri) == manifest


def test_a_failure_that_met_another_seen_task_trains_as_that_tasks_success_up_to_that_step(plane):
    rng = np.random.default_rng(1)
    failed = _episode(plane, rng, False, as_imagined)
    failed = failed.model_copy(update={"hindsight": {"reach-red": 4, "reach-yellow": 6}})  # reach-yellow: held out

    manifest = curate(plane, [failed], CurationConfig(consistency_threshold=0.5))

    [relabelled] = manifest.of_role("hindsight")
    assert (relabelled.task_id, relabelled.hindsight_step, relabelled.success) == ("reach-red", 4, True)
    assert [e.episode_id for e in manifest.of_role("critic_negative")] == [str(failed.episode_id)]
    assert load_manifest(plane, save_manifest(plane, manifest)) == manifest

    frames = render_clip(rng, STEPS, 32, noise=0)
    imagined = np.zeros((2, K, F, 32, 32, 3), np.uint8)
    imagined[:, 1] = np.array([1, 2], np.uint8)[:, None, None, None, None]  # decision i chose candidate 1
    clip = fleet_clip(failed, relabelled, frames, imagined)
    assert clip.caption == "reach the red block" and clip.success
    assert len(clip.frames) == 5 and len(clip.actions) == 4  # the frames up to the step it was met
    assert np.array_equal(clip.actions, np.asarray(failed.actions[:4], np.float32))
    # and what the robot imagined before that step: the first decision's chosen future, not the second's
    assert clip.plan_steps.tolist() == [0] and np.array_equal(clip.plans, imagined[:1, 1])
    # a model that imagined at half the camera's size: its plans are brought to the frames' size
    halves = fleet_clip(failed, relabelled, frames, imagined[:, :, :, ::2, ::2])
    assert halves.plans.shape == clip.plans.shape and np.array_equal(
        halves.plans[0, 0, ::2, ::2], imagined[0, 1, 0, ::2, ::2]
    )
    whole = fleet_clip(failed, manifest.of_role("critic_negative")[0], frames, imagined)
    assert whole.plan_steps.tolist() == [0, 5] and not whole.success


def test_an_episode_whose_media_were_replaced_is_skipped_and_named_and_the_round_goes_on(plane):
    rng = np.random.default_rng(2)
    good, replaced = _episode(plane, rng, True, as_imagined), _episode(plane, rng, True, as_imagined)
    replaced = replaced.model_copy(update={"hindsight": {"reach-red": 4}})  # its relabelled entry goes too
    forged = b"not the frames the robot hashed"
    s3_client(plane).put_object(plane.s3.episodes_bucket, replaced.media.key, io.BytesIO(forged), len(forged))

    manifest = curate(plane, [good, replaced], CurationConfig(consistency_threshold=0.5))

    assert {e.episode_id for e in manifest.entries} == {str(good.episode_id)}
    assert list(manifest.skipped) == [str(replaced.episode_id)]
    assert "checksum_mismatch" in manifest.skipped[str(replaced.episode_id)] and manifest.considered == 2
