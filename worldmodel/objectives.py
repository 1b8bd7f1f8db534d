"""What each network learns from: the losses of the base stages and of the learner's fine-tune.

Each loss draws its own batch from `StageData` with the caller's generator, so one loss serves a
base stage (one generator for the whole run) and a fine-tuning step (a generator per step and
rank) alike. The optimisation loop that minimises them is `worldmodel.trainer.fit`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sim.tabletop import ALL_TASKS
from worldmodel.policy import WorldModelPolicy
from worldmodel.stage_data import StageData


def video_loss(policy: WorldModelPolicy, data: StageData, batch: int, rng: np.random.Generator) -> torch.Tensor:
    b = data.video_batch(rng, batch, policy.video_model.config.future_frames)
    return policy.video_model.loss(b.future, b.first, policy.text_encoder(b.texts), b.points)


@dataclass
class ImaginedWindows:
    """Futures the world model imagined from real frames, labelled with what the robot really did."""

    frames: torch.Tensor  # (N, 2 + F, 3, S, S): the frame before, the real current frame, F imagined
    actions: torch.Tensor  # (N, F, action_dim): the robot's actions from the current frame on


@torch.no_grad()
def imagine_windows(
    policy: WorldModelPolicy, data: StageData, n: int, rng: np.random.Generator, batch: int = 64
) -> ImaginedWindows:
    future = policy.video_model.config.future_frames
    long_enough = [i for i, f in enumerate(data.frames) if len(f) > future + 2]
    policy.eval()
    frames, actions = [], []
    for start in range(0, n, batch):
        prev, first, texts, acts = [], [], [], []
        for i in rng.choice(long_enough, size=min(batch, n - start)):
            clip_frames, clip = data.frames[i], data.clips[i]
            t = int(rng.integers(1, len(clip_frames) - future))
            prev.append(clip_frames[t - 1])
            first.append(clip_frames[t])
            texts.append(clip.caption)  # the short instruction, as the robot is given at run time
            acts.append(torch.as_tensor(clip.actions[t : t + future]).float())
        first_t = torch.stack(first)
        video = policy.video_model.sample(first_t, policy.text_encoder(texts), 1)[:, 0]
        frames.append(torch.cat([torch.stack(prev)[:, None], first_t[:, None], video], dim=1))
        actions.append(torch.stack(acts))
    return ImaginedWindows(torch.cat(frames), torch.cat(actions))


def _real_transitions(data: StageData, rng: np.random.Generator, n: int) -> list[tuple[torch.Tensor, ...]]:
    out = []
    for i in rng.integers(len(data.clips), size=n):
        frames, actions = data.frames[i], data.clips[i].actions
        t = int(rng.integers(1, len(frames) - 1))  # transition t -> t+1 with frame t-1 as context
        out.append((frames[t - 1], frames[t], frames[t + 1], torch.as_tensor(actions[t]).float()))
    return out


def _imagined_transitions(windows: ImaginedWindows, rng: np.random.Generator, n: int) -> list[tuple[torch.Tensor, ...]]:
    rows = rng.integers(len(windows.frames), size=n)
    steps = rng.integers(windows.actions.shape[1], size=n)
    return [
        (windows.frames[i, k], windows.frames[i, k + 1], windows.frames[i, k + 2], windows.actions[i, k])
        for i, k in zip(rows, steps, strict=True)
    ]


def idm_loss(
    policy: WorldModelPolicy,
    data: StageData,
    batch: int,
    rng: np.random.Generator,
    imagined: ImaginedWindows | None = None,
) -> torch.Tensor:
    """On the robot's real frames; with `imagined`, half of every batch is imagined futures.

    At run time the IDM reads imagined futures, which are blurrier than any real frame: trained on
    real frames alone it reads them as small, hesitant motions. Adapting it to the generator's own
    futures, labelled with the action the robot took from that real frame, closes that gap. The
    real half keeps it an inverse dynamics model of this embodiment rather than a policy alone.
    """
    n_imagined = batch // 2 if imagined is not None else 0
    rows = _real_transitions(data, rng, batch - n_imagined)
    if n_imagined:
        rows += _imagined_transitions(imagined, rng, n_imagined)
    prev, cur, nxt, act = (torch.stack(column) for column in zip(*rows, strict=True))
    return policy.idm.loss(prev, cur, nxt, act)


def critic_instructions(data: StageData) -> list[str]:
    """The instructions a wrong-instruction negative is drawn from."""
    return sorted({c.caption for c in data.clips} | {t.instruction for t in ALL_TASKS})


def critic_loss(
    policy: WorldModelPolicy, data: StageData, batch: int, rng: np.random.Generator, instructions: list[str]
) -> torch.Tensor:
    """Positives: a window of a successful episode with its own instruction; negatives: the same
    window with another task's instruction, or a failed episode's window."""
    b = data.video_batch(rng, batch, policy.critic.config.frames - 1)
    texts, labels = b.texts, b.succeeded.float()
    for j in range(len(texts)):
        if rng.uniform() < 0.5:
            texts[j] = str(rng.choice([s for s in instructions if s != texts[j]]))
            labels[j] = 0.0
    with torch.no_grad():
        text = policy.text_encoder(texts).pooled
    logits = policy.critic(torch.cat([b.first[:, None], b.future], dim=1), text)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
