"""A curated manifest turned into a local training set that training processes read.

The launcher fetches each episode's media from S3 (sha256 checked against the manifest), keeps
the executed frames and actions, and writes them with the replayed robot logs in the world model's
own clip layout (`worldmodel.stage_data.save_clips`: one `.npz` read with allow_pickle=False, and
JSON for the text), so replayed logs keep their detailed captions and grounding points. Each clip
says where it came from (`stage`: "fleet" or "replay"), for the fine-tune's stated mix. Training
processes then need no service credentials, and every rank of a multi-process run reads the same
bytes.
"""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from infra.clients import s3_client
from infra.contracts.episode import Episode
from infra.settings import Settings
from learner.curation import DatasetManifest, ManifestEntry
from learner.episode_index import EpisodeQueries
from learner.media import load_media
from sim.tabletop import Task
from worldmodel import stage_data
from worldmodel.stage_data import Clip


def build_training_set(
    settings: Settings, manifest: DatasetManifest, index: EpisodeQueries, out: Path, replay: Path | None = None
) -> Path:
    """Write `out/data.npz` and `out/episodes.json` for every episode of the manifest, plus the
    clips of the `replay` training set (in `save_clips`' layout) when one is given."""
    s3 = s3_client(settings)
    by_id = {str(ep.episode_id): ep for ep in index.by_ids([e.episode_id for e in manifest.entries])}
    missing = [e.episode_id for e in manifest.entries if e.episode_id not in by_id]
    if missing:
        raise ValueError(
            f"manifest {manifest.manifest_id[:12]} names {len(missing)} episodes the index lacks, e.g. {missing[0]}"
        )

    def fetch(entry: ManifestEntry):
        ref = by_id[entry.episode_id].media
        if ref.sha256 != entry.media_sha256:
            raise ValueError(f"episode {entry.episode_id}: the index's media are not those the manifest names")
        return load_media(s3, settings, ref)

    with ThreadPoolExecutor(settings.learner.fetch_workers) as pool:
        media = list(pool.map(fetch, manifest.entries))
    clips = [
        fleet_clip(by_id[e.episode_id], e, m["executed_frames"], m["imagined_videos"])
        for e, m in zip(manifest.entries, media, strict=True)
    ]
    if replay is not None:
        clips += [dataclasses.replace(c, stage="replay") for c in load_clips(replay)]
    return save_clips(clips, out, manifest.manifest_id + (f" + replay {replay}" if replay else ""))


def fleet_clip(episode: Episode, entry: ManifestEntry, frames: np.ndarray, imagined: np.ndarray) -> Clip:
    """An episode as a training clip, with each decision's chosen imagined future; a hindsight
    entry is its frames up to the step the other task's check was met, under that task's
    instruction, as a success."""
    actions = np.asarray(episode.actions, np.float32)
    end = len(actions) if entry.role != "hindsight" else entry.hindsight_step
    plans = chosen_plans(episode, imagined, end, size=frames.shape[1])
    if entry.role != "hindsight":
        clip = Clip(
            "fleet", frames, episode.instruction, episode.instruction, actions, episode.success, episode.task_id
        )
    else:
        instruction = Task.parse(entry.task_id).instruction
        clip = Clip("fleet", frames[: end + 1], instruction, instruction, actions[:end], True, entry.task_id)
    return dataclasses.replace(clip, plans=plans[0], plan_steps=plans[1]) if plans else clip


def chosen_plans(episode: Episode, imagined: np.ndarray, end: int, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The chosen candidate's imagined frames of each decision taken before step `end`, and their
    steps, at the executed frames' `size`: episodes of models that imagine at different sizes then
    share one training set, and the model being trained scales them all to its own."""
    k, imagined_size = imagined.shape[1], imagined.shape[3]
    if size % imagined_size:
        return None  # not a whole multiple: no exact way to bring them to the frames' size
    factor = size // imagined_size
    picked = [(i, d.step, d.stored_chosen(k)) for i, d in enumerate(episode.decisions) if d.step < end]
    picked = [(i, step, c) for i, step, c in picked if c is not None]
    if not picked:
        return None
    plans = np.stack([imagined[i, c] for i, _, c in picked])
    if factor > 1:
        plans = plans.repeat(factor, axis=2).repeat(factor, axis=3)
    return plans, np.array([step for _, step, _ in picked], np.int64)


def save_clips(clips: list[Clip], out: Path, source: str) -> Path:
    """A training set: the clips, with what they were made from in `source.json`."""
    stage_data.save_clips(clips, out)
    (out / "source.json").write_text(json.dumps({"source": source, "clips": len(clips)}))
    return out


def load_clips(directory: Path) -> list[Clip]:
    """The training set as clips, the form the world model's training code reads."""
    return stage_data.load_clips(directory)
