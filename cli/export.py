"""`fleet export`: the fleet's episodes in formats other tools load."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer

from cli.app import console, group, progress, settings

export_app = group("export", "The fleet's episodes in formats other tools load.")


@export_app.command("lerobot")
def lerobot(
    out: Path = typer.Option(..., help="the dataset directory to write (replaced when the new one is complete)"),
    since: datetime | None = typer.Option(None, help="only episodes that started at or after this time (ISO 8601)"),
    success_only: bool = typer.Option(False, "--success-only", help="only episodes that succeeded"),
    data_file_mb: float = typer.Option(100, min=0, help="start a new steps file once one reaches this size"),
    video_file_mb: float = typer.Option(500, min=0, help="start a new video file once one reaches this size"),
) -> None:
    """Write the learner's indexed episodes as a LeRobot v3.0 dataset: parquet steps (action,
    next.done, next.success), the executed camera frames as H.264 video, meta/info.json, tasks,
    episodes (with each one's fleet episode id, robot and policy version) and stats. Files split
    between episodes at the sizes given, as LeRobot's own writer does."""
    from infra.clients import s3_client
    from learner.episode_index import open_reader
    from learner.lerobot import FileSizes, export_lerobot
    from learner.media import load_media

    config = settings()
    reader = open_reader(config)
    filters = {"since": since, "success": True if success_only else None}
    chosen = reader.query(**filters)
    s3 = s3_client(config)
    with progress() as bars:
        bar = bars.add_task("episodes", total=len(chosen))
        report = export_lerobot(
            chosen,
            out,
            lambda episode: load_media(s3, config, episode.media)["executed_frames"],
            progress=lambda: bars.advance(bar),
            sizes=FileSizes(data_mb=data_file_mb, video_mb=video_file_mb),
        )
    console.print(f"{report.episodes} episodes, {report.frames} frames: LeRobot v3.0 dataset at {report.out}")
    for episode_id, why in report.skipped.items():
        console.print(f"skipped {episode_id}: {why}")
