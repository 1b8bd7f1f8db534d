"""A curated manifest turned into a local training set that training processes read.

The launcher fetches each episode's media from S3 (sha256 checked against the manifest), keeps
the executed frames and actions, and writes one `.npz` (read with allow_pickle=False) plus a JSON
sidecar for the text. Training processes then need no service credentials, and every rank of a
multi-process run reads the same bytes.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from infra.clients import s3_client
from infra.contracts.episode import MEDIA_ARRAYS, ArraySpec, MediaRef
from infra.settings import Settings
from learner.curation import DatasetManifest
from learner.episode_index import EpisodeIndex
from learner.media import load_media
from worldmodel.stage_data import Clip


def build_training_set(
    settings: Settings, manifest: DatasetManifest, index: EpisodeIndex, out: Path, replay: Path | None = None
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

    def fetch(entry):
        ref = MediaRef(
            bucket=settings.s3.episodes_bucket,
            key=entry.media_key,
            sha256=entry.media_sha256,
            nbytes=0,
            arrays={name: ArraySpec(shape=[0], dtype="uint8") for name in MEDIA_ARRAYS},
        )
        return load_media(s3, settings.s3_endpoint, ref)["executed_frames"]

    with ThreadPoolExecutor(settings.learner.fetch_workers) as pool:
        frames = list(pool.map(fetch, manifest.entries))
    episodes = [by_id[e.episode_id] for e in manifest.entries]
    clips = [
        Clip(
            "fleet",
            f,
            ep.instruction,
            ep.instruction,
            actions=np.asarray(ep.actions, np.float32),
            success=ep.success,
            task_id=ep.task_id,
        )
        for f, ep in zip(frames, episodes, strict=True)
    ]
    if replay is not None:
        clips += load_clips(replay)
    return save_clips(clips, out, manifest.manifest_id + (f" + replay {replay}" if replay else ""))


def save_clips(clips: list[Clip], out: Path, source: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    np.savez(
        out / "data.npz",
        frames=np.concatenate([c.frames for c in clips]),
        lengths=np.array([len(c.frames) for c in clips]),
        actions=np.concatenate([c.actions for c in clips]).astype(np.float32),
    )
    meta = [{"instruction": c.caption, "task_id": c.task_id, "success": bool(c.success)} for c in clips]
    (out / "episodes.json").write_text(json.dumps({"source": source, "episodes": meta}))
    return out


def load_clips(directory: Path) -> list[Clip]:
    """The training set as clips, the form the world model's training code reads."""
    meta = json.loads((directory / "episodes.json").read_text())["episodes"]
    with np.load(directory / "data.npz", allow_pickle=False) as data:
        frames, lengths, actions = data["frames"], data["lengths"], data["actions"]
    clips, f0, a0 = [], 0, 0
    for m, n in zip(meta, lengths, strict=True):
        clips.append(
            Clip(
                "fleet",
                frames[f0 : f0 + n],
                m["instruction"],
                m["instruction"],
                actions=actions[a0 : a0 + n - 1],
                success=m["success"],
                task_id=m["task_id"],
            )
        )
        f0, a0 = f0 + n, a0 + n - 1
    return clips
