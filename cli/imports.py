"""`fleet import`: datasets from other tools, as training sets for the loop."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.app import console, group

import_app = group("import", "Datasets from other tools, as training sets the loop mixes in (--replay).")


@import_app.command("lerobot")
def lerobot(
    dataset: Path = typer.Argument(..., help="a LeRobot v3.0 dataset directory (meta/info.json, data/, videos/)"),
    out: Path = typer.Option(..., help="the training set to write, for `fleet loop round|serve --replay OUT`"),
) -> None:
    """Read a LeRobot v3.0 dataset's episodes (frames, actions, task, success) as robot-log clips,
    written as a training set that every fine-tune of the loop mixes in with `--replay`."""
    from learner.dataset import save_clips
    from learner.lerobot import import_lerobot

    clips = import_lerobot(dataset)
    save_clips(clips, out, f"lerobot {dataset.resolve()}")
    frames = sum(len(c.frames) for c in clips)
    console.print(f"{len(clips)} episodes, {frames} frames from {dataset} -> training set {out}")
