"""The evaluator: how likely an imagined future is to end in success, given the instruction.

A small video classifier over (first frame, imagined frames) conditioned on the text embedding,
trained on executed episodes with their success labels. The planner asks it to rank candidate
futures; a VLM or a person can stand in through the same `score` signature.
"""

from __future__ import annotations

import pydantic.dataclasses
import torch
from torch import nn

from worldmodel.layers import FiLMBlock


@pydantic.dataclasses.dataclass
class CriticConfig:
    size: int = 32
    frames: int = 5  # the first frame and the imagined future frames
    channels: tuple[int, ...] = (32, 64)
    text_dim: int = 64


CRITIC_PRESETS = {"tiny": CriticConfig(), "small": CriticConfig(channels=(64, 128))}


class SuccessCritic(nn.Module):
    def __init__(self, config: CriticConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.stem = nn.Conv2d(3 * config.frames, c[0], 3, padding=1)
        self.blocks = nn.ModuleList(FiLMBlock(a, b, config.text_dim) for a, b in zip(c, c[1:] + c[-1:], strict=True))
        self.head = nn.Linear(c[-1], 1)

    def forward(self, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Success logits (B,) for videos (B, frames, 3, S, S) in [-1, 1]."""
        b, f, _, s, _ = video.shape
        h = self.stem(video.reshape(b, f * 3, s, s))
        for block in self.blocks:
            h = nn.functional.avg_pool2d(block(h, text), 2)
        return self.head(h.mean(dim=(-2, -1))).squeeze(-1)

    @torch.no_grad()
    def score(self, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(video, text))
