"""Training the base world-model policy: three video stages, then the IDM and the critic.

Stages follow the 1X recipe: (a) generic "internet" video (`pretrain`), (b) human point-of-view
video of the tasks (`midtrain`), (c) the robot's own logs (`posttrain`); captions are the
upsampled, detailed ones half of the time and the short instruction otherwise, so the model learns
from rich text and still answers to the instructions a robot is given. Every stage runs the one
optimisation loop (`worldmodel.trainer.fit`) and is checkpointed when it ends, so a rerun resumes
after the last finished stage. ("Fine-tune" is the learner's job on fleet data, not a stage here.)
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field
from pydantic.dataclasses import dataclass

from infra.contracts import video
from infra.errors import UsageError
from sim.tabletop import ALL_TASKS
from worldmodel.checkpoint import load_state, save_state
from worldmodel.objectives import (
    critic_instructions,
    critic_loss,
    idm_loss,
    imagine_ranked,
    imagine_windows,
    video_loss,
)
from worldmodel.policy import WorldModelPolicy
from worldmodel.stage_data import StageData, human_pov_clips, internet_clips, robot_logs
from worldmodel.text_encoder import build_vocab
from worldmodel.trainer import StageObjective, TorchEngine, fit

Count = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]


@dataclass
class TrainProfile:
    internet_clips: Count = 300
    human_clips: Count = 150
    robot_clips: Positive = 400  # scripted, noisy demonstrations: a few minutes of robot time
    pretrain_steps: Count = 350
    midtrain_steps: Count = 300
    posttrain_steps: Count = 1700
    idm_steps: Count = 5000
    imagined_windows: Positive = 6000  # imagined futures the IDM adapts to after its real-frame training
    idm_adapt_steps: Count = 2000
    ranked_frames: Positive = 1000  # real frames the critic sees 4 imagined futures of, ranked
    critic_steps: Count = 400
    batch: Positive = 32
    lr: Annotated[float, Field(gt=0, lt=1)] = 2e-3
    preset: Literal["tiny", "small"] = "tiny"
    # Conditioning on a frozen pretrained sentence encoder understands instructions in words the
    # simulator never uses; None trains a word embedding from the captions alone.
    pretrained_text: Literal["all-MiniLM-L6-v2"] | None = None
    prediction: Literal["velocity", "x"] | None = None  # the generator's target; None: the preset's
    # How the robot's logs reach training: as rendered, or through the data plane's H.264 (lossy),
    # as a fleet's episodes do when its agents send frames as video.
    robot_frames: Literal["exact", "h264"] = "exact"
    # The forward passes in bfloat16 (torch.autocast; weights, gradients and the optimiser stay
    # float32). On a CPU with AMX or AVX-512 BF16 the convolutions run on bf16 units; elsewhere
    # bf16 is emulated and slower than fp32.
    precision: Literal["fp32", "bf16"] = "fp32"
    seed: int = 0


PROFILES = {
    "ci": TrainProfile(
        internet_clips=16,
        human_clips=8,
        robot_clips=8,
        pretrain_steps=3,
        midtrain_steps=3,
        posttrain_steps=3,
        idm_steps=3,
        imagined_windows=8,
        idm_adapt_steps=3,
        ranked_frames=4,
        critic_steps=3,
        batch=4,
    ),
    "quick": TrainProfile(),
    "full": TrainProfile(
        internet_clips=2000,
        human_clips=800,
        robot_clips=1500,
        pretrain_steps=4000,
        midtrain_steps=3000,
        posttrain_steps=6000,
        idm_steps=15000,
        imagined_windows=20000,
        idm_adapt_steps=6000,
        ranked_frames=4000,
        critic_steps=3000,
        preset="small",
    ),
}
VIDEO_STAGES = ("pretrain", "midtrain", "posttrain")
POLICY_STAGES = ("idm", "idm_adapt", "critic")
STAGES = (*VIDEO_STAGES, *POLICY_STAGES)


def stage_objective(
    stage: str, policy: WorldModelPolicy, data: dict[str, StageData], profile: TrainProfile, rng: np.random.Generator
) -> StageObjective:
    """A stage's loss over the networks it trains; the video stages train the text encoder too."""
    robot, b = data["posttrain"], profile.batch
    if stage in VIDEO_STAGES:
        networks, loss = [policy.video_model, policy.text_encoder], lambda: video_loss(policy, data[stage], b, rng)
    elif stage == "idm":
        networks, loss = [policy.idm], lambda: idm_loss(policy, robot, b, rng)
    elif stage == "idm_adapt":
        imagined = imagine_windows(policy, robot, profile.imagined_windows, rng)
        networks, loss = [policy.idm], lambda: idm_loss(policy, robot, b, rng, imagined)
    else:
        instructions = critic_instructions(robot)
        ranked = imagine_ranked(policy, robot, profile.ranked_frames, rng)
        networks, loss = [policy.critic], lambda: critic_loss(policy, robot, b, rng, instructions, ranked)
    return StageObjective(stage, networks, loss)


# Clipped at norm 1, as diffusion and flow models commonly are; the IDM and critic train without.
MAX_GRAD_NORM = {"pretrain": 1.0, "midtrain": 1.0, "posttrain": 1.0}


def _refuse_another_profiles_run(out: Path, profile: TrainProfile) -> None:
    """Resuming a directory trained as another profile would load weights of another shape or
    recipe and report them as this one's."""
    report = out / "train_report.json"
    if not report.exists():
        return
    trained_as, wanted = json.loads(report.read_text()).get("profile"), json.loads(json.dumps(asdict(profile)))
    if trained_as is not None and trained_as != wanted:
        changed = sorted(k for k in trained_as.keys() | wanted.keys() if trained_as.get(k) != wanted.get(k))
        raise UsageError(
            f"{out} holds a run of another training profile (it differs in {', '.join(changed)})",
            hint="train into a fresh directory, or remove that one",
        )


def train_all(
    profile: TrainProfile,
    out: Path,
    progress_factory=None,
    skip_stages: tuple[str, ...] = (),
    redo_stages: tuple[str, ...] = (),
) -> dict:
    """Every stage, resumable, then the policy directory at `out/policy`.

    `progress_factory(stage, steps)` returns a callback `(step, loss)` for that stage's progress.
    A stage in `redo_stages` trains again from the checkpoint even if it finished.
    """
    _refuse_another_profiles_run(out, profile)
    torch.manual_seed(profile.seed)
    rng = np.random.default_rng(profile.seed)
    out.mkdir(parents=True, exist_ok=True)
    timings, report = {}, {"profile": asdict(profile), "skipped": list(skip_stages), "trained": []}

    t = time.perf_counter()
    clips = {
        "pretrain": internet_clips(profile.internet_clips, profile.seed, size=64),
        "midtrain": human_pov_clips(profile.human_clips, profile.seed, size=64),
        "posttrain": robot_logs(profile.robot_clips, profile.seed, size=64),
    }
    if profile.robot_frames == "h264":
        for clip in clips["posttrain"]:
            clip.frames = video.decode(video.encode(clip.frames), clip.frames.shape)
    texts = [text for cs in clips.values() for c in cs for text in (c.caption, c.detailed_caption)]
    vocab = build_vocab(texts + [task.instruction for task in ALL_TASKS])
    policy = WorldModelPolicy.create(vocab, profile.preset, profile.pretrained_text, profile.prediction)
    data = {k: StageData.build(v, policy) for k, v in clips.items()}
    timings["data_s"] = time.perf_counter() - t

    modules = {name: getattr(policy, name) for name in ("text_encoder", "video_model", "idm", "critic")}
    state = out / "checkpoints" / "state.safetensors"
    progress = load_state(state, modules)
    if progress == {} and (legacy := state.with_name("progress.json")).exists():  # a run from before one format
        progress = {"done": ["posttrain" if s == "finetune" else s for s in json.loads(legacy.read_text())]}
    done: list[str] = [s for s in (progress or {"done": []})["done"] if s not in redo_stages]
    if done and (earlier := out / "train_report.json").exists():  # a resumed run keeps its finished stages' figures
        before = json.loads(earlier.read_text())
        timings.update({f"{s}_s": before["timings_s"][f"{s}_s"] for s in done if f"{s}_s" in before["timings_s"]})
        report.update({f"{s}_loss_first_last": before[k] for s in done if (k := f"{s}_loss_first_last") in before})
    for stage in STAGES:
        if stage in done or stage in skip_stages:
            continue
        t = time.perf_counter()
        steps = getattr(profile, f"{stage}_steps")
        bar = progress_factory(stage, steps) if progress_factory else None
        objective = stage_objective(stage, policy, data, profile, rng)
        autocast = torch.bfloat16 if profile.precision == "bf16" else None
        engine = TorchEngine(objective, profile.lr, MAX_GRAD_NORM.get(stage), autocast)
        losses = fit(engine, steps, after_step=(lambda step, loss, _, bar=bar: bar(step, loss)) if bar else None)
        timings[f"{stage}_s"] = time.perf_counter() - t
        report[f"{stage}_loss_first_last"] = [float(np.mean(losses[:10])), float(np.mean(losses[-10:]))]
        done.append(stage)
        report["trained"].append(stage)  # by this call; the times of earlier calls' stages are kept
        save_state(state, modules, {"done": done})
    policy.eval().save(out / "policy")
    report["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    (out / "train_report.json").write_text(json.dumps(report, indent=1))
    return report
