"""The world-model policy as one unit: text encoder, video generator, IDM and critic.

Saved as a directory of safetensors weights with each network's config as JSON, plus
`policy.json` naming the parts, so agents and `fleet eval` load it without pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from infra.errors import UsageError
from worldmodel import checkpoint
from worldmodel.critic import CRITIC_PRESETS, CriticConfig, SuccessCritic
from worldmodel.idm import IDM_PRESETS, IdmConfig, InverseDynamics
from worldmodel.layers import frames_to_tensor
from worldmodel.text_encoder import TextEncoder, TextEncoderConfig
from worldmodel.video_model import VIDEO_PRESETS, VideoGenerator, VideoModelConfig

PARTS = {
    "text_encoder": (TextEncoder, TextEncoderConfig),
    "video_model": (VideoGenerator, VideoModelConfig),
    "idm": (InverseDynamics, IdmConfig),
    "critic": (SuccessCritic, CriticConfig),
}


@dataclass
class WorldModelPolicy:
    text_encoder: TextEncoder
    video_model: VideoGenerator
    idm: InverseDynamics
    critic: SuccessCritic

    @classmethod
    def create(
        cls, vocab: list[str], preset: str = "tiny", pretrained_text: str | None = None, prediction: str | None = None
    ) -> WorldModelPolicy:
        """Fresh networks of a preset; `prediction` overrides the generator's ("velocity" or "x")."""
        video = VIDEO_PRESETS[preset]
        if prediction is not None:
            video = replace(video, prediction=prediction)
        return cls(
            TextEncoder(TextEncoderConfig(vocab=vocab, dim=video.text_dim, pretrained=pretrained_text)),
            VideoGenerator(video),
            InverseDynamics(IDM_PRESETS[preset]),
            SuccessCritic(CRITIC_PRESETS[preset]),
        )

    @property
    def size(self) -> int:
        return self.video_model.config.size

    def prepare(self, frames: np.ndarray) -> torch.Tensor:
        """Camera frames uint8 (..., H, W, 3) at any multiple of the model size -> model input."""
        x = frames_to_tensor(frames)
        factor = x.shape[-1] // self.size
        if factor > 1:
            x = torch.nn.functional.avg_pool2d(x.flatten(0, -4), factor).reshape(*x.shape[:-2], self.size, self.size)
        return x

    def save(self, directory: Path) -> Path:
        for name in PARTS:
            checkpoint.save(getattr(self, name), directory, name)
        (directory / "policy.json").write_text(json.dumps({"format": 1, "parts": list(PARTS)}, indent=1))
        return directory

    @staticmethod
    def locate(directory: Path) -> Path:
        """The policy directory itself, or the `policy/` that `fleet train all --out DIR` wrote in DIR."""
        for candidate in (directory, directory / "policy"):
            if (candidate / "policy.json").is_file():
                return candidate
        raise UsageError(
            f"{directory} holds no policy (no policy.json there or in {directory / 'policy'})",
            hint="pass a policy directory, or the run directory of `fleet train all --out DIR`",
        )

    @classmethod
    def load(cls, directory: Path) -> WorldModelPolicy:
        directory = cls.locate(directory)
        manifest = json.loads((directory / "policy.json").read_text())
        if manifest.get("format") != 1:
            raise UsageError(f"{directory} holds policy format {manifest.get('format')}, this code reads 1")
        return cls(**{name: checkpoint.load(m, c, directory, name) for name, (m, c) in PARTS.items()})

    def with_sample_steps(self, steps: int | None) -> WorldModelPolicy:
        """Imagine with `steps` sampler steps instead of the trained default (None keeps it)."""
        if steps is not None:
            if steps < 1:
                raise UsageError(f"sample steps must be at least 1, not {steps}")
            self.video_model.config.sample_steps = steps
        return self

    def eval(self) -> WorldModelPolicy:
        for name in PARTS:
            getattr(self, name).eval()
        return self
