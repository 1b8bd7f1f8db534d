"""Training the world-model policy: three video stages, then the IDM and the critic.

Stages follow the 1X recipe: (a) generic "internet" video, (b) human point-of-view video of the
tasks, (c) the robot's own logs; captions are the upsampled, detailed ones half of the time and
the short instruction otherwise, so the model learns from rich text and still answers to the
instructions a robot is given. Each stage resumes from its checkpoint if one is there.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from fleet_agent.sim.tabletop import ALL_TASKS
from worldmodel.policy import WorldModelPolicy
from worldmodel.stage_data import Clip, human_pov_clips, internet_clips, robot_logs
from worldmodel.text_encoder import build_vocab


@dataclass
class TrainProfile:
    internet_clips: int = 300
    human_clips: int = 150
    robot_clips: int = 400  # scripted, noisy demonstrations: a few minutes of robot time
    pretrain_steps: int = 350
    midtrain_steps: int = 300
    finetune_steps: int = 1700
    idm_steps: int = 5000
    imagined_windows: int = 6000  # imagined futures the IDM adapts to after its real-frame training
    idm_adapt_steps: int = 2000
    critic_steps: int = 400
    batch: int = 32
    lr: float = 2e-3
    preset: str = "tiny"
    seed: int = 0


PROFILES = {
    "ci": TrainProfile(internet_clips=16, human_clips=8, robot_clips=8, pretrain_steps=3, midtrain_steps=3,
                       finetune_steps=3, idm_steps=3, imagined_windows=8, idm_adapt_steps=3, critic_steps=3,
                       batch=4),  # fmt: skip
    "quick": TrainProfile(),
    "full": TrainProfile(internet_clips=2000, human_clips=800, robot_clips=1500, pretrain_steps=4000,
                         midtrain_steps=3000, finetune_steps=6000, idm_steps=15000, imagined_windows=20000,
                         idm_adapt_steps=6000, critic_steps=3000, preset="small"),  # fmt: skip
}
VIDEO_STAGES = ("pretrain", "midtrain", "finetune")
POLICY_STAGES = ("idm", "idm_adapt", "critic")


@dataclass
class StageData:
    """Windows of (first frame, next F frames, caption) drawn from clips, as model tensors."""

    clips: list[Clip]
    frames: list[torch.Tensor]  # per clip (T, 3, S, S)

    @classmethod
    def build(cls, clips: list[Clip], policy: WorldModelPolicy) -> StageData:
        return cls(clips, [policy.prepare(c.frames) for c in clips])

    def video_batch(self, rng: np.random.Generator, n: int, future: int) -> VideoBatch:
        firsts, futures, texts, succeeded, points = [], [], [], [], []
        for i in rng.integers(len(self.clips), size=n):
            frames, clip = self.frames[i], self.clips[i]
            t = int(rng.integers(0, max(len(frames) - future, 1)))
            window = frames[t : t + future + 1]
            if len(window) < future + 1:  # a short clip: hold its last frame
                window = torch.cat([window, window[-1:].expand(future + 1 - len(window), -1, -1, -1)])
            firsts.append(window[0])
            futures.append(window[1:])
            texts.append(clip.detailed_caption if rng.uniform() < 0.5 else clip.caption)
            succeeded.append(clip.success is not False)  # action-free clips carry no label
            points.append(torch.as_tensor(clip.points[t]) if clip.points is not None else torch.full((2, 2), torch.nan))
        return VideoBatch(torch.stack(firsts), torch.stack(futures), texts, torch.tensor(succeeded), torch.stack(points))


@dataclass
class VideoBatch:
    first: torch.Tensor  # (B, 3, S, S)
    future: torch.Tensor  # (B, F, 3, S, S)
    texts: list[str]
    succeeded: torch.Tensor  # (B,) bool
    points: torch.Tensor  # (B, 2, 2) the instruction's object and goal; NaN where not known


def _optimiser(params, profile: TrainProfile) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=profile.lr, weight_decay=1e-4)


def _resume(state_path: Path, modules: dict[str, torch.nn.Module]) -> bool:
    if not state_path.exists():
        return False
    weights = load_file(state_path)
    for name, module in modules.items():
        module.load_state_dict({k.split(".", 1)[1]: v for k, v in weights.items() if k.startswith(name + ".")})
    return True


def _checkpoint(state_path: Path, modules: dict[str, torch.nn.Module]) -> None:
    state_path.parent.mkdir(parents=True, exist_ok=True)
    flat = {f"{n}.{k}": v.contiguous() for n, m in modules.items() for k, v in m.state_dict().items()}
    tmp = state_path.with_suffix(".tmp")
    save_file(flat, tmp)
    tmp.replace(state_path)


def _fit(modules: list[torch.nn.Module], steps: int, profile: TrainProfile, batch_loss: Callable[[], torch.Tensor],
         progress: Callable[[int, float], None] | None, max_grad_norm: float | None = None) -> list[float]:  # fmt: skip
    params = [p for m in modules for p in m.parameters()]
    opt, losses = _optimiser(params, profile), []
    for m in modules:
        m.train()
    for step in range(steps):
        loss = batch_loss()
        opt.zero_grad()
        loss.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        losses.append(loss.item())
        if progress:
            progress(step + 1, loss.item())
    return losses


def video_loss(policy: WorldModelPolicy, data: StageData, batch: int, rng: np.random.Generator) -> torch.Tensor:
    b = data.video_batch(rng, batch, policy.video_model.config.future_frames)
    return policy.video_model.loss(b.future, b.first, policy.text_encoder(b.texts), b.points)


def train_video_stage(policy: WorldModelPolicy, data: StageData, steps: int, profile: TrainProfile,
                      rng: np.random.Generator, progress: Callable[[int, float], None] | None = None) -> list[float]:  # fmt: skip
    def batch_loss() -> torch.Tensor:
        return video_loss(policy, data, profile.batch, rng)

    # Clipped at norm 1, as diffusion and flow models commonly are; the IDM and critic train without.
    return _fit([policy.video_model, policy.text_encoder], steps, profile, batch_loss, progress, max_grad_norm=1.0)


@dataclass
class ImaginedWindows:
    """Futures the world model imagined from real frames, labelled with what the robot really did."""

    frames: torch.Tensor  # (N, 2 + F, 3, S, S): the frame before, the real current frame, F imagined
    actions: torch.Tensor  # (N, F, action_dim): the robot's actions from the current frame on


@torch.no_grad()
def imagine_windows(policy: WorldModelPolicy, data: StageData, n: int, rng: np.random.Generator,
                    batch: int = 64) -> ImaginedWindows:  # fmt: skip
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
    rows, steps = rng.integers(len(windows.frames), size=n), rng.integers(windows.actions.shape[1], size=n)
    return [(windows.frames[i, k], windows.frames[i, k + 1], windows.frames[i, k + 2], windows.actions[i, k])
            for i, k in zip(rows, steps, strict=True)]  # fmt: skip


def train_idm(policy: WorldModelPolicy, data: StageData, steps: int, profile: TrainProfile, rng: np.random.Generator,
              progress=None, imagined: ImaginedWindows | None = None) -> list[float]:  # fmt: skip
    """On the robot's real frames; with `imagined`, half of every batch is imagined futures.

    At run time the IDM reads imagined futures, which are blurrier than any real frame: trained on
    real frames alone it reads them as small, hesitant motions. Adapting it to the generator's own
    futures, labelled with the action the robot took from that real frame, closes that gap. The
    real half keeps it an inverse dynamics model of this embodiment rather than a policy alone.
    """

    return _fit([policy.idm], steps, profile, lambda: idm_loss(policy, data, profile.batch, rng, imagined), progress)


def idm_loss(policy: WorldModelPolicy, data: StageData, batch: int, rng: np.random.Generator,
             imagined: ImaginedWindows | None = None) -> torch.Tensor:  # fmt: skip
    n_imagined = batch // 2 if imagined is not None else 0
    rows = _real_transitions(data, rng, batch - n_imagined)
    if n_imagined:
        rows += _imagined_transitions(imagined, rng, n_imagined)
    prev, cur, nxt, act = (torch.stack(column) for column in zip(*rows, strict=True))
    return policy.idm.loss(prev, cur, nxt, act)


def train_critic(policy: WorldModelPolicy, data: StageData, steps: int, profile: TrainProfile,
                 rng: np.random.Generator, progress=None) -> list[float]:  # fmt: skip
    instructions = critic_instructions(data)
    return _fit([policy.critic], steps, profile, lambda: critic_loss(policy, data, profile.batch, rng, instructions), progress)


def critic_instructions(data: StageData) -> list[str]:
    """The instructions a wrong-instruction negative is drawn from."""
    return sorted({c.caption for c in data.clips} | {t.instruction for t in ALL_TASKS})


def critic_loss(policy: WorldModelPolicy, data: StageData, batch: int, rng: np.random.Generator,
                instructions: list[str]) -> torch.Tensor:  # fmt: skip
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


def train_all(profile: TrainProfile, out: Path, progress_factory=None, skip_stages: tuple[str, ...] = ()) -> dict:
    """Every stage, resumable, then the policy directory at `out/policy`."""
    torch.manual_seed(profile.seed)
    rng = np.random.default_rng(profile.seed)
    out.mkdir(parents=True, exist_ok=True)
    timings, report = {}, {"profile": asdict(profile), "skipped": list(skip_stages)}

    t = time.perf_counter()
    data = {
        "pretrain": internet_clips(profile.internet_clips, profile.seed, size=64),
        "midtrain": human_pov_clips(profile.human_clips, profile.seed, size=64),
        "finetune": robot_logs(profile.robot_clips, profile.seed, size=64),
    }
    vocab = build_vocab([c.caption for cs in data.values() for c in cs] + [c.detailed_caption for cs in data.values() for c in cs]
                        + [task.instruction for task in ALL_TASKS])  # fmt: skip
    policy = WorldModelPolicy.create(vocab, profile.preset)
    stage_data = {k: StageData.build(v, policy) for k, v in data.items()}
    timings["data_s"] = time.perf_counter() - t

    modules = {"text_encoder": policy.text_encoder, "video_model": policy.video_model, "idm": policy.idm, "critic": policy.critic}
    state = out / "checkpoints" / "state.safetensors"
    progress_path = out / "checkpoints" / "progress.json"
    done: list[str] = json.loads(progress_path.read_text()) if progress_path.exists() and _resume(state, modules) else []
    plan = [(s, getattr(profile, f"{s}_steps")) for s in (*VIDEO_STAGES, *POLICY_STAGES)]
    for stage, steps in plan:
        if stage in done or stage in skip_stages:
            continue
        t = time.perf_counter()
        bar = progress_factory(stage, steps) if progress_factory else None
        if stage in VIDEO_STAGES:
            losses = train_video_stage(policy, stage_data[stage], steps, profile, rng, bar)
        elif stage == "idm":
            losses = train_idm(policy, stage_data["finetune"], steps, profile, rng, bar)
        elif stage == "idm_adapt":
            imagined = imagine_windows(policy, stage_data["finetune"], profile.imagined_windows, rng)
            losses = train_idm(policy, stage_data["finetune"], steps, profile, rng, bar, imagined)
        else:
            losses = train_critic(policy, stage_data["finetune"], steps, profile, rng, bar)
        timings[f"{stage}_s"] = time.perf_counter() - t
        report[f"{stage}_loss_first_last"] = [float(np.mean(losses[:10])), float(np.mean(losses[-10:]))]
        done.append(stage)
        _checkpoint(state, modules)
        progress_path.write_text(json.dumps(done))
    policy.eval().save(out / "policy")
    report["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    (out / "train_report.json").write_text(json.dumps(report, indent=1))
    return report
