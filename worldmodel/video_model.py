"""The world model: a text- and first-frame-conditioned video generator trained by flow matching.

Given the current camera frame and an instruction it imagines the next `future_frames` frames.
Training follows rectified flow / flow matching (Lipman et al. 2023; Liu et al. 2023): a straight
path x_t = (1 - t) * noise + t * video, and the network regresses the velocity video - noise;
sampling integrates that velocity with a few Euler steps, which is what keeps a decision cheap
on CPU. K candidate futures are K noise draws of one batch. The model generates the change from
the current frame rather than whole frames: a tabletop scene is mostly still, and a model that
must redraw the background spends its capacity there instead of on the motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from worldmodel.layers import CrossAttention, FiLMBlock, timestep_embedding
from worldmodel.text_encoder import TextFeatures


@dataclass
class VideoModelConfig:
    size: int = 32
    future_frames: int = 4
    channels: tuple[int, ...] = (32, 64)
    text_dim: int = 64
    cond_dim: int = 128
    sample_steps: int = 4
    # Frame changes have a std of about 0.05 against unit noise; scaled up to about unit variance
    # the noise schedule spends its steps on the motion instead of drowning it (as latent diffusion
    # scales its latents).
    change_scale: float = 10.0


VIDEO_PRESETS = {
    "tiny": VideoModelConfig(channels=(32, 64, 96), cond_dim=128),
    "small": VideoModelConfig(channels=(64, 128, 128), cond_dim=256, sample_steps=8),
}


class VideoGenerator(nn.Module):
    def __init__(self, config: VideoModelConfig):
        super().__init__()
        self.config = config
        c, f = config.channels, config.future_frames
        self.cond = nn.Sequential(nn.Linear(config.cond_dim + config.text_dim, config.cond_dim), nn.SiLU(),
                                  nn.Linear(config.cond_dim, config.cond_dim))  # fmt: skip
        self.stem = nn.Conv2d(3 * f + 3, c[0], 3, padding=1)  # noisy future frames + the first frame
        # A U-Net: each down block halves the resolution, each up block undoes one and takes the
        # matching skip connection.
        self.down = nn.ModuleList(FiLMBlock(a, b, config.cond_dim) for a, b in zip(c[:-1], c[1:], strict=True))
        self.mid = FiLMBlock(c[-1], c[-1], config.cond_dim)
        self.mid_attn = CrossAttention(c[-1], config.text_dim)
        self.up = nn.ModuleList(FiLMBlock(b + a, a, config.cond_dim) for a, b in zip(c[:-1], c[1:], strict=True))
        self.head = nn.Conv2d(c[0], 3 * f, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, first: torch.Tensor, text: TextFeatures) -> torch.Tensor:
        """Velocity for noisy futures x_t (B, F, 3, S, S) at times t (B,)."""
        b, f, _, s, _ = x_t.shape
        cond = self.cond(torch.cat([timestep_embedding(t, self.config.cond_dim), text.pooled], dim=-1))
        h = self.stem(torch.cat([x_t.reshape(b, f * 3, s, s), first], dim=1))
        skips = []
        for block in self.down:
            skips.append(h)
            h = block(nn.functional.avg_pool2d(h, 2), cond)
        h = self.mid_attn(self.mid(h, cond), text.tokens, text.pad)
        for block in reversed(self.up):
            skip = skips.pop()
            h = block(torch.cat([nn.functional.interpolate(h, size=skip.shape[-2:]), skip], dim=1), cond)
        return self.head(h).reshape(b, f, 3, s, s)

    def loss(self, video: torch.Tensor, first: torch.Tensor, text: TextFeatures) -> torch.Tensor:
        """Flow-matching loss on future frames `video` (B, F, 3, S, S) in [-1, 1], as changes from `first`."""
        change = (video - first[:, None]) * self.config.change_scale
        noise = torch.randn_like(change)
        t = torch.rand(video.shape[0], device=video.device)
        x_t = (1 - t)[:, None, None, None, None] * noise + t[:, None, None, None, None] * change
        return nn.functional.mse_loss(self(x_t, t, first, text), change - noise)

    @torch.no_grad()
    def sample(self, first: torch.Tensor, text: TextFeatures, k: int, generator: torch.Generator | None = None,
               steps: int | None = None) -> torch.Tensor:  # fmt: skip
        """K imagined futures per conditioning row: (B, K, F, 3, S, S), Euler-integrated."""
        steps = steps or self.config.sample_steps
        b, s, f = first.shape[0], self.config.size, self.config.future_frames
        first_k, text_k = first.repeat_interleave(k, 0), text.repeat_interleave(k)
        x = torch.randn(b * k, f, 3, s, s, generator=generator, device=first.device)
        for i in range(steps):
            t = torch.full((b * k,), i / steps, device=first.device)
            x = x + self(x, t, first_k, text_k) / steps
        return (first_k[:, None] + x / self.config.change_scale).clamp(-1, 1).reshape(b, k, f, 3, s, s)
