"""`fleet episodes`: the learner's episode index."""

from __future__ import annotations

from datetime import datetime

from rich.table import Table

from cli.app import console, group, settings

episodes_app = group("episodes", "Look into the learner's episode index.")


@episodes_app.command("summary")
def summary() -> None:
    """Episodes and success per robot and task in the learner's index."""
    from learner.episode_index import EpisodeIndex

    with EpisodeIndex(settings().index_path) as index:
        print_summary(index)


def print_summary(index) -> None:
    for by, title in (("robot_id", "robot"), ("task_id", "task")):
        table = Table(title, "episodes", "success", "last seen", title=f"per {title}")
        for key, n, successes, last, _ in index.per(by):
            table.add_row(key, str(n), f"{successes / n:.0%}", datetime.fromtimestamp(last).strftime("%H:%M:%S"))
        console.print(table)
    console.print(f"{index.count()} episodes in {index.path}")
