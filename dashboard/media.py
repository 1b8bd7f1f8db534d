"""An episode's media as browser videos: executed frames, the chosen imagined future, every candidate.

Media come from S3 through the same sha256-checked path the learner uses, so the browser never
shows a tampered or truncated episode. Videos are WebM (VP8), which every Chromium plays, encoded
with the ffmpeg that the imageio-ffmpeg wheel ships; small LRU caches keep the episode being
browsed warm.
"""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache

import numpy as np

from infra.clients import s3_client
from infra.contracts.episode import Episode
from infra.errors import FleetError
from infra.settings import Settings
from learner.media import load_media

FPS = 6  # a simulator step is a sixth of a second of robot time


class MediaMissing(FleetError):
    """The episode's media cannot be shown; the message says why (gone, corrupt, or S3 down)."""


class EpisodeMedia:
    def __init__(self, settings: Settings, cache: int = 8):
        self.settings = settings
        self._s3 = None
        self.arrays = lru_cache(maxsize=cache)(self._arrays)
        self.video = lru_cache(maxsize=cache * 16)(self._video)

    def _arrays(self, episode_json: str) -> dict[str, np.ndarray]:
        episode = Episode.model_validate_json(episode_json)
        self._s3 = self._s3 or s3_client(self.settings)
        try:
            return load_media(self._s3, self.settings, episode.media)
        except Exception as e:  # noqa: BLE001 - Rejected says what is wrong; ServiceUnavailable names S3
            raise MediaMissing(f"media of episode {episode.episode_id} cannot be shown: {e}") from e

    def _video(self, episode_json: str, which: str) -> bytes:
        """`executed`, `imagined` (the chosen candidates, stitched over the steps each was executed),
        or `d{decision}c{candidate}` (one candidate's whole imagined future)."""
        episode = Episode.model_validate_json(episode_json)
        media = self.arrays(episode_json)
        if which == "executed":
            frames = media["executed_frames"]
        elif which == "imagined":
            frames = chosen_imagined(episode, media["imagined_videos"])
        elif which.startswith("d") and "c" in which:
            d, c = (int(x) for x in which[1:].split("c"))
            frames = media["imagined_videos"][d, c]
        else:
            raise ValueError(f"no video {which!r}: executed, imagined or dNcK")
        return encode_webm(frames)


def chosen_imagined(episode: Episode, imagined: np.ndarray) -> np.ndarray:
    """For each decision, the chosen candidate's frames over the steps that were then executed,
    so the result lines up in time with the executed video. A decision with no chosen plan (all
    rejected: the robot held still) repeats the last frame."""
    _, k, f = imagined.shape[:3]
    out = []
    for d, decision in enumerate(episode.decisions):
        end = episode.decisions[d + 1].step if d + 1 < len(episode.decisions) else len(episode.actions)
        steps = max(1, min(end - decision.step, f))
        local = decision.stored_chosen(k)
        if local is None:
            out.append(np.repeat(out[-1][-1:] if out else imagined[d, 0, :1], steps, 0))
        else:
            out.append(imagined[d, local, :steps])
    return np.concatenate(out)


def encode_webm(frames: np.ndarray, scale: int = 4) -> bytes:
    """uint8 (T, H, W, 3) frames as a VP8 WebM, upscaled `scale`x with nearest-neighbour pixels."""
    import imageio_ffmpeg

    frames = np.ascontiguousarray(frames.repeat(scale, 1).repeat(scale, 2))
    h, w = frames.shape[1:3]
    fd, path = tempfile.mkstemp(suffix=".webm")
    os.close(fd)
    try:
        writer = imageio_ffmpeg.write_frames(
            path,
            (w, h),
            fps=FPS,
            codec="libvpx",
            quality=None,
            output_params=["-b:v", "1M", "-auto-alt-ref", "0"],
            macro_block_size=1,
            ffmpeg_log_level="error",
        )
        writer.send(None)
        for frame in frames:
            writer.send(frame)
        writer.close()
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)
