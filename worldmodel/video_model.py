"""The world model: a text- and first-frame-conditioned video generator trained by flow matching.

Given the current camera frame and an instruction it imagines the next `future_frames` frames.
Training follows rectified flow / flow matching (Lipman et al. 2023; Liu et al. 2023): a straight
path x_t = (1 - t) * noise + t * video, and the network regresses the velocity video - noise;
sampling integrates that velocity with a few Euler steps, which is what keeps a decision cheap
on CPU. K candidate futures are K noise draws of one batch. The model generates the change from
the current frame rather than whole frames: a tabletop scene is mostly still, and a model that
must redraw the background spends its capacity there instead of on the motion.

Grounding: where the instruction points. A tiny U-Net trained for minutes on CPU does not learn
to tie "the red block" to the red pixels from the flow loss alone; its futures then move the
gripper the same way whatever the instruction says. So a grounding head attends from two learned
queries (the object to act on, the place to bring the gripper or object) to the words, matches
each query against per-pixel features of the first frame and takes the soft-argmax (as in
spatial-softmax keypoints, Levine et al. 2016). During training on the robot's own logs an
auxiliary loss pulls these points onto the true positions from the simulator's state; at run time
only the frame and the words are used. The generator sees the points as offset maps (pixel minus
point), which makes "move towards the object" a local rule a small convolution can learn. They
enter at every resolution of the U-Net, not only its input: given them at the input alone, the
generator's futures hardly changed when the points moved.
"""

from __future__ import annotations

from typing import Literal

import pydantic.dataclasses
import torch
from torch import nn

from worldmodel.layers import CrossAttention, FiLMBlock, timestep_embedding
from worldmodel.text_encoder import TextFeatures


@pydantic.dataclasses.dataclass
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
    grounding_channels: int = 32
    # The U-Net trunk can run on frames folded `patch` x `patch` into channels (pixel unshuffle, as
    # in latent and patch-based video models) and unfold its output, with the frame size (and so
    # the IDM, the critic and the episode contract) unchanged. At 2 a training step costs 0.18 s
    # instead of 0.31 and K=8 futures 43 ms instead of 89, but after the quick profile's steps the
    # policy succeeds far less often (README, "A cheaper generator"): the presets keep 1.
    patch: int = 1
    # What the network predicts: the flow's velocity (noise to change), or the clean change itself
    # (x-prediction, as in EDM-style preconditioned and "clean-data" flow models). With "x" the
    # loss regresses the mean change, which for a near-deterministic expert is most of the answer,
    # and one sampler step returns that mean: a lever for fewer steps per decision.
    prediction: Literal["velocity", "x"] = "velocity"


VIDEO_PRESETS = {
    "tiny": VideoModelConfig(channels=(32, 64, 96), cond_dim=128),
    "small": VideoModelConfig(channels=(64, 128, 128), cond_dim=256, sample_steps=8),
}


def pixel_grid(size: int, device=None) -> torch.Tensor:
    """(2, S, S): x then y of each pixel centre in workspace units [0, 1] (x right, y down)."""
    centres = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x, y])


class Grounding(nn.Module):
    """Two points in the first frame named by the instruction: the object, then the goal."""

    POINTS = 2

    def __init__(self, text_dim: int, channels: int):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(self.POINTS, text_dim) * 0.1)
        # Cosine similarity times a learned sharpness (as in QK-norm attention): a block covers a
        # few pixels of a thousand, and an unscaled softmax over them is nearly flat, passing
        # almost no gradient to the pixels that matter; unnormalised, the logits blow up instead.
        self.log_sharpness = nn.Parameter(torch.full((1,), 2.5))  # 1-d: DeepSpeed broadcasts parameters as bytes
        self.read = nn.MultiheadAttention(text_dim, 4, batch_first=True)
        # Coordinates go in too, so a query can also name a place ("to the left") with no object.
        self.pixels = nn.Sequential(
            nn.Conv2d(5, channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels, text_dim, 1),
        )

    def forward(self, first: torch.Tensor, text: TextFeatures) -> torch.Tensor:
        """Points (B, 2, 2) as (x, y) in [0, 1] for frames (B, 3, S, S)."""
        b, _, s, _ = first.shape
        grid = pixel_grid(s, first.device)
        queries, _ = self.read(
            self.queries.expand(b, -1, -1), text.tokens, text.tokens, key_padding_mask=text.pad, need_weights=False
        )
        keys = self.pixels(torch.cat([first, grid.expand(b, -1, -1, -1)], dim=1)).flatten(2)  # (B, D, S*S)
        similarity = nn.functional.normalize(queries, dim=-1) @ nn.functional.normalize(keys, dim=1)
        weights = torch.softmax(similarity * self.log_sharpness.exp(), dim=-1)  # (B, 2, S*S)
        return weights @ grid.flatten(1).T

    @staticmethod
    def offset_maps(points: torch.Tensor, size: int) -> torch.Tensor:
        """(B, 2 * points, S, S): each pixel's position minus each point."""
        grid = pixel_grid(size, points.device)
        return (grid[None, None] - points[..., None, None]).flatten(1, 2)


class VideoGenerator(nn.Module):
    def __init__(self, config: VideoModelConfig):
        super().__init__()
        self.config = config
        c, f = config.channels, config.future_frames
        self.cond = nn.Sequential(
            nn.Linear(config.cond_dim + config.text_dim, config.cond_dim),
            nn.SiLU(),
            nn.Linear(config.cond_dim, config.cond_dim),
        )
        self.grounding = Grounding(config.text_dim, config.grounding_channels)
        # noisy future frames and the first frame, folded, and the offsets to the grounded points
        p2 = config.patch**2
        self.stem = nn.Conv2d((3 * f + 3) * p2 + 2 * Grounding.POINTS, c[0], 3, padding=1)
        # A U-Net: each down block halves the resolution, each up block undoes one and takes the
        # matching skip connection.
        self.down = nn.ModuleList(FiLMBlock(a, b, config.cond_dim) for a, b in zip(c[:-1], c[1:], strict=True))
        self.mid = FiLMBlock(c[-1], c[-1], config.cond_dim)
        self.mid_attn = CrossAttention(c[-1], config.text_dim)
        self.up = nn.ModuleList(FiLMBlock(b + a, a, config.cond_dim) for a, b in zip(c[:-1], c[1:], strict=True))
        self.head = nn.Conv2d(c[0], 3 * f * p2, 3, padding=1)
        # At patch > 1, a light full-resolution refinement of the unfolded output, which sees the
        # noisy futures and the first frame pixel by pixel again: the folded trunk decides where
        # the motion goes, this places its edges.
        self.refine = (
            nn.Sequential(nn.Conv2d(3 * f * 2 + 3, c[0], 3, padding=1), nn.SiLU(), nn.Conv2d(c[0], 3 * f, 3, padding=1))
            if config.patch > 1
            else None
        )
        if self.refine is not None:
            nn.init.zeros_(self.refine[-1].weight)
            nn.init.zeros_(self.refine[-1].bias)
        # The points again at every resolution: the coarse layers decide where motion goes.
        self.inject_down = nn.ModuleList(nn.Conv2d(2 * Grounding.POINTS, b, 1) for b in c[1:])
        self.inject_up = nn.ModuleList(nn.Conv2d(2 * Grounding.POINTS, a, 1) for a in c[:-1])
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, first: torch.Tensor, text: TextFeatures, points: torch.Tensor
    ) -> torch.Tensor:
        """Velocity for noisy futures x_t (B, F, 3, S, S) at times t (B,), given the grounded points."""
        b, f, _, s, _ = x_t.shape
        cond = self.cond(torch.cat([timestep_embedding(t, self.config.cond_dim), text.pooled], dim=-1))
        p = self.config.patch
        folded = nn.functional.pixel_unshuffle(torch.cat([x_t.reshape(b, f * 3, s, s), first], dim=1), p)
        h = self.stem(torch.cat([folded, Grounding.offset_maps(points, s // p)], dim=1))
        skips = []
        for block, inject in zip(self.down, self.inject_down, strict=True):
            skips.append(h)
            h = block(nn.functional.avg_pool2d(h, 2), cond)
            h = h + inject(Grounding.offset_maps(points, h.shape[-1]))
        h = self.mid_attn(self.mid(h, cond), text.tokens, text.pad)
        for block, inject in zip(reversed(self.up), reversed(self.inject_up), strict=True):
            skip = skips.pop()
            h = block(torch.cat([nn.functional.interpolate(h, size=skip.shape[-2:]), skip], dim=1), cond)
            h = h + inject(Grounding.offset_maps(points, h.shape[-1]))
        out = nn.functional.pixel_shuffle(self.head(h), p)
        if self.refine is not None:
            out = out + self.refine(torch.cat([out, x_t.reshape(b, f * 3, s, s), first], dim=1))
        return out.reshape(b, f, 3, s, s)

    def loss(
        self, video: torch.Tensor, first: torch.Tensor, text: TextFeatures, true_points: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Flow-matching loss on future frames `video` (B, F, 3, S, S) in [-1, 1], as changes from `first`,
        plus the grounding loss on rows whose true points (B, 2, 2) are known (NaN where not)."""
        change = (video - first[:, None]) * self.config.change_scale
        noise = torch.randn_like(change)
        t = torch.rand(video.shape[0], device=video.device)
        x_t = (1 - t)[:, None, None, None, None] * noise + t[:, None, None, None, None] * change
        points = self.grounding(first, text)
        target = change if self.config.prediction == "x" else change - noise
        loss = nn.functional.mse_loss(self(x_t, t, first, text, points), target)
        if true_points is not None:
            known = ~true_points.isnan().any(dim=(1, 2))
            if known.any():
                # Positions are in [0, 1]; a 0.1 miss should weigh like a visible motion error.
                loss = loss + 100 * nn.functional.mse_loss(points[known], true_points[known])
        return loss

    @torch.no_grad()
    def sample(
        self,
        first: torch.Tensor,
        text: TextFeatures,
        k: int,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        points: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """K imagined futures per conditioning row: (B, K, F, 3, S, S), Euler-integrated.

        `points` (B, 2, 2) overrides the grounding head's, to ask what the generator makes of them."""
        steps = steps or self.config.sample_steps
        b, s, f = first.shape[0], self.config.size, self.config.future_frames
        points = self.grounding(first, text) if points is None else points
        points = points.repeat_interleave(k, 0)  # the same for every candidate
        first_k, text_k = first.repeat_interleave(k, 0), text.repeat_interleave(k)
        x = torch.randn(b * k, f, 3, s, s, generator=generator, device=first.device)
        for i in range(steps):
            t = torch.full((b * k,), i / steps, device=first.device)
            out = self(x, t, first_k, text_k, points)
            # x-prediction: the velocity that reaches the predicted change by t = 1
            velocity = (out - x) / (1 - i / steps) if self.config.prediction == "x" else out
            x = x + velocity / steps
        return (first_k[:, None] + x / self.config.change_scale).clamp(-1, 1).reshape(b, k, f, 3, s, s)
