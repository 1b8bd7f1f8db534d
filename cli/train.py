"""`fleet train`: the base policy's stages, from generic video to the critic."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli.app import console, group, progress
from infra.errors import UsageError

train_app = group("train", "Train the world-model policy: three video stages, IDM, IDM adaptation, critic.")

# Stage (c)'s old name: "fine-tune" now means only the learner's DeepSpeed job on fleet data.
OLD_NAMES = {"finetune": "posttrain"}
PROFILE = typer.Option("quick", help="quick (minutes on 2 cores), full, or ci (seconds)")
OUT = typer.Option(Path("out/train"), help="run directory: checkpoints, report, policy/")


def _train(
    profile: str,
    out: Path,
    only: str | None,
    skip: tuple[str, ...] = (),
    again: bool = False,
    text_encoder: str | None = None,
    prediction: str | None = None,
    robot_frames: str | None = None,
    precision: str | None = None,
) -> None:
    import dataclasses
    import typing

    from worldmodel.text_encoder import PRETRAINED
    from worldmodel.train import PROFILES, STAGES, TrainProfile, train_all

    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}", hint=f"profiles: {', '.join(PROFILES)}")
    chosen = PROFILES[profile]
    if text_encoder is not None:
        if text_encoder not in ("trained", *PRETRAINED):
            raise UsageError(f"unknown text encoder {text_encoder!r}", hint=f"trained, {', '.join(PRETRAINED)}")
        chosen = dataclasses.replace(chosen, pretrained_text=None if text_encoder == "trained" else text_encoder)
    if prediction is not None:
        if prediction not in ("velocity", "x"):
            raise UsageError(f"unknown prediction target {prediction!r}", hint="velocity or x")
        chosen = dataclasses.replace(chosen, prediction=prediction)
    for name, value in {"robot_frames": robot_frames, "precision": precision}.items():
        if value is not None:
            choices = typing.get_args(typing.get_type_hints(TrainProfile)[name])
            if value not in choices:
                raise UsageError(f"unknown {name.replace('_', ' ')} {value!r}", hint=" or ".join(choices))
            chosen = dataclasses.replace(chosen, **{name: value})
    skip = tuple(OLD_NAMES.get(s, s) for s in skip)
    if unknown := set(skip) - set(STAGES):
        raise UsageError(f"unknown stage {', '.join(sorted(unknown))}", hint=f"stages: {', '.join(STAGES)}")
    skip = tuple(s for s in STAGES if (only and s != only) or s in skip)
    with progress() as bars:
        ids = {}

        def bar(stage: str, steps: int):
            ids[stage] = bars.add_task(stage, total=steps)
            return lambda step, loss: bars.update(ids[stage], completed=step, description=f"{stage} loss {loss:.3f}")

        result = train_all(chosen, out, bar, skip_stages=skip, redo_stages=(only,) if again and only else ())
    console.print_json(json.dumps(result["timings_s"]))
    console.print(f"policy written to {out / 'policy'}")


@train_app.command("all")
def all_stages(
    profile: str = PROFILE,
    out: Path = OUT,
    skip: list[str] = typer.Option(
        [], help="a stage to leave out, for ablations (repeatable): --skip pretrain --skip midtrain"
    ),
    text_encoder: str | None = typer.Option(
        None,
        help="instruction encoder: `trained` (words learned from the captions) or all-MiniLM-L6-v2 "
        "(frozen, pretrained, with a trained adapter); unset: the profile's",
    ),
    prediction: str | None = typer.Option(
        None,
        help="what the generator predicts: `velocity` (flow matching) or `x` (the clean change; one "
        "sampler step gives the mean); unset: the preset's",
    ),
    robot_frames: str | None = typer.Option(
        None,
        help="the robot's logs as rendered (`exact`) or through the data plane's H.264 (`h264`, lossy), "
        "to measure what sending frames as video costs the policy; unset: exact",
    ),
    precision: str | None = typer.Option(
        None,
        help="the forward passes in `fp32` or `bf16` (autocast; weights and optimiser stay fp32): faster "
        "on a CPU with AMX or AVX-512 BF16, slower elsewhere; unset: the profile's",
    ),
) -> None:
    """Every stage in order; resumes from the run directory's checkpoint."""
    _train(
        profile,
        out,
        None,
        tuple(skip),
        text_encoder=text_encoder,
        prediction=prediction,
        robot_frames=robot_frames,
        precision=precision,
    )


def _stage_command(stage: str, doc: str, name: str | None = None, hidden: bool = False) -> None:
    def command(
        profile: str = PROFILE,
        out: Path = OUT,
        again: bool = typer.Option(False, "--again", help="train the stage again even if the run finished it"),
    ) -> None:
        _train(profile, out, stage, again=again)

    command.__doc__ = doc
    train_app.command(name or stage.replace("_", "-"), hidden=hidden)(command)


for _stage, _doc in {
    "pretrain": "Stage (a): generic 'internet' video with captions.",
    "midtrain": "Stage (b): human point-of-view video of the tasks.",
    "posttrain": "Stage (c): the robot's own logs.",
    "idm": "The inverse dynamics model, on the robot's logs.",
    "idm_adapt": "The IDM again, half on futures the world model imagines from the logs' frames.",
    "critic": "The success critic, on the robot's logs.",
}.items():
    _stage_command(_stage, _doc)
_stage_command("posttrain", "Stage (c) under its old name; use `fleet train posttrain`.", name="finetune", hidden=True)
