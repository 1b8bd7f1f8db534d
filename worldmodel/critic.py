"""The evaluator: how far an imagined future gets towards finishing the instruction.

A small video network over (first frame, imagined frames) conditioned on the text embedding. Its
score is the progress 1 - steps-to-go / horizon at the future's end, learned as value functions
for video planning are (`worldmodel.objectives.critic_loss`): exact steps-to-go from successful
logs, censored bounds from failed ones, and a ranking against worse futures from the same frame.
The planner asks it to rank candidate futures; a score near 1 at an episode's last frames also
serves as a success detector. A VLM or a person can stand in through the same `score` signature.
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
    # Frames folded `patch` x `patch` into channels before the first block (pixel unshuffle), as
    # the generator's trunk is: a quarter of the positions at 2, which is most of its cost per decision.
    patch: int = 1
    # The future frames enter as their changes from the first, amplified (as the generator's
    # changes are): a tabletop future differs from its first frame in a few pixels, and whether
    # and where it moves is what ranks candidates; read from raw frames it is learned slowly.
    change_scale: float = 0.0  # 0: raw frames (checkpoints from before)


CRITIC_PRESETS = {
    "tiny": CriticConfig(patch=2, change_scale=10.0),
    "small": CriticConfig(channels=(64, 128), patch=2, change_scale=10.0),
}


class SuccessCritic(nn.Module):
    def __init__(self, config: CriticConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.stem = nn.Conv2d(3 * config.frames * config.patch**2, c[0], 3, padding=1)
        self.blocks = nn.ModuleList(FiLMBlock(a, b, config.text_dim) for a, b in zip(c, c[1:] + c[-1:], strict=True))
        self.head = nn.Linear(c[-1], 1)

    def forward(self, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Progress logits (B,) for videos (B, frames, 3, S, S) in [-1, 1]."""
        b, f, _, s, _ = video.shape
        if self.config.change_scale:
            video = torch.cat([video[:, :1], (video[:, 1:] - video[:, :1]) * self.config.change_scale], dim=1)
        h = self.stem(nn.functional.pixel_unshuffle(video.reshape(b, f * 3, s, s), self.config.patch))
        for block in self.blocks:
            h = nn.functional.avg_pool2d(block(h, text), 2)
        return self.head(h.mean(dim=(-2, -1))).squeeze(-1)

    @torch.no_grad()
    def score(self, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(video, text))
