"""Curation: which of the fleet's episodes the next round trains on, as a versioned manifest in S3.

- A success whose executed frames agree with the future the robot chose to imagine is kept for
  the world model and the IDM: the robot imagined it, did it, and it worked.
- A success that did not go as imagined is left out (the imagined video would teach the wrong
  future), and counted.
- A failure is kept for the critic, as a negative.
- Hindsight: an episode that met another seen task's success check (the agent reports which, and
  at what step) is, up to that step, a successful demonstration of that task: it is kept for the
  world model and the IDM under that task's instruction, whatever its own outcome.

Consistency of an episode: for every decision, the cosine similarity between the imagined change
of the chosen candidate (its frames minus the frame it was imagined from) and the executed change
over the same steps, averaged over decisions. 1 means the robot did what it imagined; around 0,
something unrelated. The manifest records the score, its threshold and every kept episode's media
sha256; its name is the sha256 of its content, so a manifest never changes once written.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Annotated, Literal

import numpy as np
import pydantic.dataclasses
from pydantic import BaseModel, ConfigDict, Field

from infra.clients import s3_client, s3_read
from infra.contracts.episode import Episode
from infra.settings import Settings
from learner.media import Rejected, load_media
from sim.tabletop import HINDSIGHT_TASKS

log = logging.getLogger(__name__)

HINDSIGHT_IDS = frozenset(t.id for t in HINDSIGHT_TASKS)  # a robot reporting a held-out task is not believed
SCORE = "mean over decisions of cos(imagined change, executed change) of the chosen candidate"


@pydantic.dataclasses.dataclass(frozen=True)
class CurationConfig:
    consistency_threshold: Annotated[float, Field(ge=-1, le=1)] = 0.3  # a cosine
    keep_failures: bool = True


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    episode_id: str
    media_key: str
    media_sha256: str
    task_id: str
    policy_version: str
    success: bool
    consistency: float | None
    role: Literal["world_model_and_idm", "critic_negative", "hindsight"]
    # hindsight entries: the step at which `task_id`'s check was met; the clip ends there
    hindsight_step: int | None = None


class DatasetManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    manifest_id: str = Field(description="sha256 of the entries and settings: the manifest's version")
    created_at: datetime
    score: str = SCORE
    consistency_threshold: float
    considered: int
    dropped_inconsistent: int
    skipped: dict[str, str] = Field(
        default_factory=dict, description="episode_id -> why its media could not be used; the round goes on without it"
    )
    entries: list[ManifestEntry]

    def of_role(self, role: str) -> list[ManifestEntry]:
        return [e for e in self.entries if e.role == role]


def consistency(episode: Episode, executed: np.ndarray, imagined: np.ndarray) -> float | None:
    """Agreement of executed with imagined futures (see the module doc); None without a chosen plan."""
    k, f, size = imagined.shape[1], imagined.shape[2], imagined.shape[3]
    factor = executed.shape[1] // size
    small = executed.astype(np.float32)
    if factor > 1:  # executed frames at camera size, imagined ones at the model's
        t, h, w, c = small.shape
        small = small.reshape(t, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))
    scores = []
    for i, d in enumerate(episode.decisions):
        c = d.stored_chosen(k)
        if c is None or d.step + 1 >= len(small):
            continue
        start = small[d.step]
        done = small[d.step + 1 : d.step + 1 + f]
        dream = imagined[i, c, : len(done)].astype(np.float32) - start
        real = done - start
        denominator = np.linalg.norm(dream) * np.linalg.norm(real)
        if denominator > 1e-6:
            scores.append(float((dream * real).sum() / denominator))
    return float(np.mean(scores)) if scores else None


def curate(settings: Settings, episodes: list[Episode], config: CurationConfig = CurationConfig()) -> DatasetManifest:
    """Score every episode (media fetched in parallel, sha256 checked) and build the manifest. An
    episode whose media cannot be used (gone, altered, not what its message declares) is skipped
    and named in `skipped`, with all its entries: one bad episode does not stop a round."""
    s3 = s3_client(settings)

    def judge(ep: Episode) -> ManifestEntry | str | None:
        try:
            media = load_media(s3, settings, ep.media)
            score = consistency(ep, media["executed_frames"], media["imagined_videos"])
        except (Rejected, ValueError) as e:  # an outage (ServiceUnavailable) still fails the round, to retry
            log.warning("curation skips episode %s: %s", ep.episode_id, e)
            return str(e)
        if ep.success and (score is None or score < config.consistency_threshold):
            return None
        if not ep.success and not config.keep_failures:
            return None
        return entry(ep, ep.task_id, ep.success, score, "world_model_and_idm" if ep.success else "critic_negative")

    def entry(ep: Episode, task_id: str, success: bool, score, role: str, step: int | None = None) -> ManifestEntry:
        return ManifestEntry(
            episode_id=str(ep.episode_id),
            media_key=ep.media.key,
            media_sha256=ep.media.sha256,
            task_id=task_id,
            policy_version=ep.model_versions.policy,
            success=success,
            consistency=None if score is None else round(score, 4),
            role=role,
            hindsight_step=step,
        )

    with ThreadPoolExecutor(settings.learner.fetch_workers) as pool:
        verdicts = list(pool.map(judge, episodes))
    skipped = {str(ep.episode_id): v for ep, v in zip(episodes, verdicts, strict=True) if isinstance(v, str)}
    usable = [(ep, v) for ep, v in zip(episodes, verdicts, strict=True) if str(ep.episode_id) not in skipped]
    relabelled = [
        entry(ep, task_id, True, None, "hindsight", step)
        for ep, _ in usable
        for task_id, step in sorted(ep.hindsight.items())
        if task_id in HINDSIGHT_IDS
    ]
    judged = [e for _, e in usable if e is not None]
    entries = sorted([*judged, *relabelled], key=lambda e: (e.episode_id, e.role))
    dropped = sum(1 for ep, e in usable if e is None and ep.success)
    return DatasetManifest(
        manifest_id=content_id(entries, config.consistency_threshold),
        created_at=datetime.now(UTC),
        consistency_threshold=config.consistency_threshold,
        considered=len(episodes),
        dropped_inconsistent=dropped,
        skipped=skipped,
        entries=entries,
    )


def content_id(entries: list[ManifestEntry], threshold: float) -> str:
    # An unset hindsight step is left out, so manifests written before it existed keep their ids.
    dumps = [e.model_dump(exclude={"hindsight_step"} if e.hindsight_step is None else set()) for e in entries]
    body = json.dumps(dumps, sort_keys=True) + f"|{threshold}"
    return hashlib.sha256(body.encode()).hexdigest()


def manifest_key(manifest_id: str) -> str:
    return f"manifests/{manifest_id}.json"


def save_manifest(settings: Settings, manifest: DatasetManifest) -> str:
    """Write the manifest to the episodes bucket; returns its s3:// URI."""
    blob = manifest.model_dump_json(indent=1).encode()
    bucket = settings.s3.episodes_bucket
    s3_client(settings).put_object(
        bucket, manifest_key(manifest.manifest_id), io.BytesIO(blob), len(blob), content_type="application/json"
    )
    return f"s3://{bucket}/{manifest_key(manifest.manifest_id)}"


def load_manifest(settings: Settings, uri: str) -> DatasetManifest:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    manifest = DatasetManifest.model_validate_json(s3_read(s3_client(settings), bucket, key))
    if content_id(manifest.entries, manifest.consistency_threshold) != manifest.manifest_id or not key.endswith(
        f"{manifest.manifest_id}.json"
    ):
        raise ValueError(f"{uri}: its content does not match its id {manifest.manifest_id}; altered or renamed")
    return manifest
