"""What each network learns from: the losses of the base stages and of the learner's fine-tune.

Each loss draws its own batch from `StageData` with the caller's generator, so one loss serves a
base stage (one generator for the whole run) and a fine-tuning step (a generator per step and
rank) alike. The optimisation loop that minimises them is `worldmodel.trainer.fit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from sim.tabletop import ALL_TASKS, TabletopConfig
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
    policy: WorldModelPolicy,
    data: StageData,
    n: int,
    rng: np.random.Generator,
    batch: int = 64,
    labels: Literal["logged", "read"] = "logged",
) -> ImaginedWindows:
    """`labels`: each window's actions as the robot logged them, or as the policy's IDM reads them
    from the real future the window was imagined in place of. Read labels carry the IDM's own arm
    (what it learnt from real frames) onto imagined futures: on logs recorded with another arm,
    the generator still imagines what really happened, and the IDM says what its arm would do."""
    future = policy.video_model.config.future_frames
    long_enough = [i for i, f in enumerate(data.frames) if len(f) > future + 2]
    policy.eval()
    frames, actions = [], []
    for start in range(0, n, batch):
        prev, first, texts, acts, real = [], [], [], [], []
        for i in rng.choice(long_enough, size=min(batch, n - start)):
            clip_frames, clip = data.frames[i], data.clips[i]
            t = int(rng.integers(1, len(clip_frames) - future))
            prev.append(clip_frames[t - 1])
            first.append(clip_frames[t])
            texts.append(clip.caption)  # the short instruction, as the robot is given at run time
            acts.append(torch.as_tensor(clip.actions[t : t + future]).float())
            real.append(clip_frames[t - 1 : t + future + 1])
        first_t = torch.stack(first)
        video = policy.video_model.sample(first_t, policy.text_encoder(texts), 1)[:, 0]
        frames.append(torch.cat([torch.stack(prev)[:, None], first_t[:, None], video], dim=1))
        actions.append(torch.stack(acts) if labels == "logged" else policy.idm.actions(torch.stack(real))[0])
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


@dataclass
class RankedFutures:
    """K futures imagined from one real frame each, scored by how well the IDM's reading of each
    agrees with what the robot really did from that frame: the ranking a decision needs."""

    clips: torch.Tensor  # (N, K, 1 + F, 3, S, S): the real frame, then F imagined
    texts: list[str]
    agreement: torch.Tensor  # (N, K): minus the mean absolute error of the read actions


@torch.no_grad()
def imagine_ranked(
    policy: WorldModelPolicy, data: StageData, n: int, rng: np.random.Generator, k: int = 4, batch: int = 16
) -> RankedFutures:
    future = policy.video_model.config.future_frames
    long_enough = [i for i, f in enumerate(data.frames) if len(f) > future + 2]
    policy.eval()
    clips, texts, agreement = [], [], []
    for start in range(0, n, batch):
        context, logged, captions = [], [], []
        for i in rng.choice(long_enough, size=min(batch, n - start)):
            frames, clip = data.frames[i], data.clips[i]
            t = int(rng.integers(1, len(frames) - future))
            context.append(frames[t - 1 : t + 1])
            logged.append(torch.as_tensor(clip.actions[t : t + future]).float())
            captions.append(clip.caption)
        context_t = torch.stack(context)  # (B, 2, 3, S, S)
        video = policy.video_model.sample(context_t[:, 1], policy.text_encoder(captions), k)  # (B, K, F, 3, S, S)
        read, _ = policy.idm.actions(
            torch.cat([context_t[:, None].expand(-1, k, -1, -1, -1, -1), video], 2).flatten(0, 1)
        )
        error = (read.unflatten(0, (len(captions), k)) - torch.stack(logged)[:, None]).abs().mean((2, 3))
        clips.append(torch.cat([context_t[:, 1, None, None].expand(-1, k, -1, -1, -1, -1), video], dim=2))
        texts += captions
        agreement.append(-error)
    return RankedFutures(torch.cat(clips), texts, torch.cat(agreement))


def _window(frames: torch.Tensor, steps) -> torch.Tensor:
    """Frames at `steps`, each held at the clip's first or last frame where it runs past an end."""
    return frames[[min(max(k, 0), len(frames) - 1) for k in steps]]


def _progress_at(length: int, t: int, horizon: int) -> float:
    """1 - steps-to-go / horizon at frame `t` of a clip of `length` frames: exact in a success, an
    upper bound in a failure (it needed more steps than it had)."""
    return 1 - (length - 1 - min(t, length - 1)) / horizon


def _progress_loss(logits: torch.Tensor, target: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """Exact progress where `target` is known; elsewhere (NaN) progress only pushed below `bound`."""
    exact, loss = ~target.isnan(), logits.new_zeros(())
    if exact.any():
        loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(logits[exact], target[exact])
    if (~exact).any():
        loss = loss + torch.relu(torch.sigmoid(logits[~exact]) - bound[~exact]).square().mean()
    return loss


def plan_loss(policy: WorldModelPolicy, data: StageData, batch: int, rng: np.random.Generator) -> torch.Tensor:
    """The evaluator on the futures the robot itself imagined and chose, labelled by what really
    followed: a decision of a successful episode has exact steps-to-go from its plan's end, one of
    a failed episode only a bound (it needed more steps than it had). Of the critic's examples,
    these are the ones the planner asks it about: imagined futures, not real ones, from the
    fleet's own states. Zero for data without plans (robot logs)."""
    rows = [i for i, c in enumerate(data.clips) if c.plans is not None]
    if not rows:
        return torch.zeros(())
    future, horizon = policy.critic.config.frames - 1, TabletopConfig().max_steps
    videos, texts, target, bound = [], [], [], []
    for i in rng.choice(rows, size=batch):
        clip, frames = data.clips[i], data.frames[i]
        j = int(rng.integers(len(clip.plans)))
        step = int(clip.plan_steps[j])
        plan = policy.prepare(clip.plans[j])
        videos.append(torch.cat([frames[step][None], _window(plan, range(future))]))
        progress = _progress_at(len(frames), step + future, horizon)
        target.append(progress if clip.success else float("nan"))
        bound.append(progress)
        texts.append(clip.caption)
    with torch.no_grad():
        text = policy.text_encoder(texts).pooled
    return _progress_loss(policy.critic(torch.stack(videos), text), torch.tensor(target), torch.tensor(bound))


def critic_loss(
    policy: WorldModelPolicy,
    data: StageData,
    batch: int,
    rng: np.random.Generator,
    instructions: list[str],
    ranked: RankedFutures | None = None,
) -> torch.Tensor:
    """The evaluator learns progress, as value functions for video planning do, not only whether
    the scene matches the instruction. Its score for (frame, future, instruction) is the progress
    1 - steps-to-go / horizon at the future's end:

    - regression: a successful log's window has exact steps-to-go; a failed one's are censored (at
      least the steps it had left), so it is only pushed below that bound;
    - ranking: the same frame and instruction with a worse future must score lower (a logistic
      pairwise loss): a static future, the past replayed backwards, a window from another time of
      the episode, another episode's future, or the right future under another task's instruction.
      Among a decision's candidates, all from one frame, this is the ordering that matters.
    - with `ranked`: the generator's own futures from one frame, ordered by how well their
      IDM-read actions agree with the logged ones (pairs closer than 0.02 carry no order).
      Real futures are crisp and imagined ones blurred: this is the ranking the planner asks for.
    """
    future, horizon = policy.critic.config.frames - 1, TabletopConfig().max_steps
    first, real, worse, texts, worse_texts, target, bound = [], [], [], [], [], [], []
    rows = rng.integers(len(data.clips), size=batch)
    for j, i in enumerate(rows):
        frames, clip = data.frames[i], data.clips[i]
        t = int(rng.integers(0, max(len(frames) - future, 1)))
        first.append(frames[t])
        real.append(_window(frames, range(t + 1, t + future + 1)))
        progress = _progress_at(len(frames), t + future, horizon)
        target.append(progress if clip.success else float("nan"))
        bound.append(progress)
        texts.append(clip.caption)
        kind = rng.integers(5)
        worse_texts.append(clip.caption)
        if kind == 0:
            worse.append(frames[t].expand(future, -1, -1, -1))
        elif kind == 1:
            worse.append(_window(frames, range(t - 1, t - future - 1, -1)))
        elif kind == 2:
            other = (t + int(rng.integers(future + 1, max(len(frames), future + 2)))) % len(frames)
            worse.append(_window(frames, range(other + 1, other + future + 1)))
        elif kind == 3:
            k = int(rows[(j + 1) % batch])
            u = int(rng.integers(0, max(len(data.frames[k]) - future, 1)))
            worse.append(_window(data.frames[k], range(u + 1, u + future + 1)))
        else:
            worse.append(real[-1])
            worse_texts[-1] = str(rng.choice([s for s in instructions if s != clip.caption]))
    with torch.no_grad():
        text = policy.text_encoder(texts + worse_texts).pooled
    first_t = torch.stack(first)[:, None]
    videos = torch.cat([torch.cat([first_t, torch.stack(real)], 1), torch.cat([first_t, torch.stack(worse)], 1)])
    scores = policy.critic(videos, text)
    good, bad = scores[:batch], scores[batch:]
    target_t, bound_t = torch.tensor(target), torch.tensor(bound)
    loss = torch.nn.functional.softplus(bad - good).mean() + _progress_loss(good, target_t, bound_t)
    if ranked is not None:
        rows = torch.as_tensor(rng.integers(len(ranked.texts), size=max(batch // 4, 1)))
        k = ranked.clips.shape[1]
        with torch.no_grad():
            text = policy.text_encoder([ranked.texts[int(i)] for i in rows]).pooled.repeat_interleave(k, 0)
        s = policy.critic(ranked.clips[rows].flatten(0, 1), text).unflatten(0, (len(rows), k))
        a = ranked.agreement[rows]
        better = (a[:, :, None] - a[:, None, :]) > 0.02  # [n, i, j]: candidate i agrees clearly better than j
        if better.any():
            loss = loss + torch.nn.functional.softplus(s[:, None, :] - s[:, :, None])[better].mean()
    return loss
