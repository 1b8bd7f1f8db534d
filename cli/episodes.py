"""`fleet episodes`: the learner's episode index."""

from __future__ import annotations

import signal
import threading
import time
from datetime import datetime

import typer
from rich.table import Table

from cli.app import console, group, settings

episodes_app = group("episodes", "The learner's episode index: fill it from Kafka, look into it.")


@episodes_app.command("ingest")
def ingest(
    until_idle: float | None = typer.Option(
        None, help="stop after this many seconds with no new record; unset = until Ctrl-C or SIGTERM"
    ),
) -> None:
    """Index the episodes topic as robots publish: the learner's ingest on its own.

    Every process started with the same consumer group (FLEET_KAFKA__CONSUMER_GROUP) takes a share
    of the topic's partitions, and Kafka hands a dead one's share to the others. With a PostgreSQL
    index (FLEET_LEARNER__INDEX_URL) they all write one index; an episode two of them see is indexed
    once. Bad messages go to the dead-letter topic with their reason.
    """
    from learner.episode_index import open_index
    from learner.ingest import EpisodeIngestor

    config = settings()
    stop = threading.Event()

    def on_signal(signum, _frame):
        console.print(f"{signal.Signals(signum).name}: stopping after the batch in hand")
        stop.set()

    last_report = [0.0]  # the first batch is reported at once, then one line every 5 s

    def report(_batch, total) -> None:
        if time.monotonic() - last_report[0] >= 5:
            last_report[0] = time.monotonic()
            console.print(
                f"indexed {total.indexed}, duplicates {total.duplicates}, dead-lettered {total.dead_lettered}"
            )

    handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with open_index(config) as index:
            console.print(
                f"ingesting {config.kafka.episodes_topic} (group {config.kafka.consumer_group}) into {index.where}"
            )
            ingestor = EpisodeIngestor(config, index)
            try:
                total = ingestor.run(stop=stop, idle_timeout_s=until_idle, on_batch=report)
            finally:
                ingestor.close()
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    console.print(
        f"done: indexed {total.indexed}, duplicates dropped {total.duplicates}, "
        f"dead-lettered {total.dead_lettered} {total.reasons or ''}"
    )


@episodes_app.command("summary")
def summary() -> None:
    """Episodes and success per robot and task in the learner's index."""
    from learner.episode_index import open_index

    with open_index(settings()) as index:
        print_summary(index)


def print_summary(index) -> None:
    for by, title in (("robot_id", "robot"), ("task_id", "task")):
        table = Table(title, "episodes", "success", "last seen", title=f"per {title}")
        for key, n, successes, last, _ in index.per(by):
            table.add_row(key, str(n), f"{successes / n:.0%}", datetime.fromtimestamp(last).strftime("%H:%M:%S"))
        console.print(table)
    console.print(f"{index.count()} episodes in {index.where}")
