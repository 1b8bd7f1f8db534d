"""The root `fleet` app and what every command group shares: settings, progress bars, reports."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from infra.settings import Settings

app = typer.Typer(
    help="worldfleet: a robot fleet that improves itself. Start with `fleet demo`, or `fleet stack up`.\n\n"
    "Settings come from FLEET_* variables or fleet.toml (see the README's configuration table).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def group(name: str, help: str) -> typer.Typer:
    """A command group (`fleet NAME ...`) registered on the root app."""
    sub = typer.Typer(help=help, no_args_is_help=True)
    app.add_typer(sub, name=name)
    return sub


def settings() -> Settings:
    level = os.environ.get("FLEET_LOG_LEVEL", "WARNING")
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # A service that is down is reported once, as a FleetError; its client's retries are noise.
    logging.getLogger("urllib3").setLevel(max(logging.ERROR, logging.getLevelName(level)))
    return Settings()


def default(config: type, name: str) -> Any:
    """A config field's default, so that an option states it once, in the config class."""
    if isinstance(config, type) and issubclass(config, BaseModel):
        return config.model_fields[name].get_default(call_default_factory=True)
    found = next(f for f in dataclasses.fields(config) if f.name == name)
    return found.default_factory() if found.default is dataclasses.MISSING else found.default


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def with_bar(label: str, total: int, run: Callable[[Callable[[int], None]], Any]) -> Any:
    """`run(done)` under a progress bar; it calls `done(n)` with how many of `total` are done."""
    with progress() as bars:
        bar = bars.add_task(label, total=total)
        return run(lambda n: bars.update(bar, completed=n))


def report(result: dict | BaseModel, out: Path | None, keys: tuple[str, ...] | None = None) -> None:
    """A metric table on the console and the whole result as JSON in `out`."""
    data = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    table = Table("metric", "value")
    for key in keys or tuple(data):
        table.add_row(key, str(data[key]))
    console.print(table)
    write_json(data, out)


def write_json(result: dict | BaseModel, out: Path | None) -> None:
    if out:
        data = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n")
        console.print(f"wrote {out}")


def start_stack(settings: Settings) -> None:
    """Start every embedded service not configured to an external one, with a spinner and a supervisor."""
    from infra import stack

    with console.status("starting the stack") as spinner:
        stack.up(settings, on_ready=lambda name: spinner.update(f"{name} ready"))
    stack.start_supervisor(settings)
