"""The inverse dynamics model: which action turns one frame into the next.

Input: the frame before, the current frame and the next one (a little context helps tell the
gripper's own motion from a pushed block's). Output: a Gaussian over the action, whose variance
is the model's own uncertainty; confidence = exp(-mean log variance), so an imagined transition
the robot could not have produced (a block moving with no gripper near it) gets low confidence
and the planner can reject it.
"""

from __future__ import annotations

import pydantic.dataclasses
import torch
from torch import nn


@pydantic.dataclasses.dataclass
class IdmConfig:
    size: int = 32
    action_dim: int = 3
    channels: tuple[int, ...] = (32, 64, 64)
    hidden: int = 128


IDM_PRESETS = {"tiny": IdmConfig(), "small": IdmConfig(channels=(48, 96, 128), hidden=256)}


class InverseDynamics(nn.Module):
    def __init__(self, config: IdmConfig):
        super().__init__()
        self.config = config
        # The motion is in the differences between frames, and where it happens matters: the
        # frames and their differences go in, and the features keep their spatial layout.
        layers, c_in = [], 15
        for c in config.channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(8, c), nn.SiLU()]
            c_in = c
        cells = (config.size // 2 ** len(config.channels)) ** 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Sequential(
            nn.Linear(c_in * cells, config.hidden), nn.SiLU(), nn.Linear(config.hidden, 2 * config.action_dim)
        )

    def forward(self, prev: torch.Tensor, cur: torch.Tensor, nxt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Action mean and log variance, each (B, action_dim), for frames (B, 3, S, S) in [-1, 1]."""
        x = torch.cat([prev, cur, nxt, nxt - cur, cur - prev], dim=1)
        mean, log_var = self.head(self.features(x)).chunk(2, dim=-1)
        return mean, log_var.clamp(-8, 4)

    def loss(self, prev, cur, nxt, action: torch.Tensor) -> torch.Tensor:
        """Gaussian negative log-likelihood: learns the action and how sure it can be of it."""
        mean, log_var = self(prev, cur, nxt)
        return (0.5 * ((action - mean) ** 2 * torch.exp(-log_var) + log_var)).mean()

    @torch.no_grad()
    def actions(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions and confidences along videos (N, T, 3, S, S): one per transition after the first.

        frames[:, 0] is context only; returns actions (N, T-2, action_dim) for the transitions
        frames[:, i] -> frames[:, i+1], i >= 1, and confidences (N, T-2) in (0, 1].
        """
        n, t = frames.shape[:2]
        prev, cur, nxt = frames[:, :-2], frames[:, 1:-1], frames[:, 2:]
        mean, log_var = self(prev.flatten(0, 1), cur.flatten(0, 1), nxt.flatten(0, 1))
        confidence = torch.exp(-log_var.clamp(min=0).mean(-1))
        return mean.reshape(n, t - 2, -1), confidence.reshape(n, t - 2)
