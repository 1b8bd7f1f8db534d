"""The `fleet` command line: one module per command group, each command a thin shell over a
library function; every expected failure is a `FleetError`, printed here as one line."""

from __future__ import annotations

import sys

from cli import agents, bench, contracts, dashboard, demo, episodes, loop, policy, rollout, stack, train  # noqa: F401
from cli.app import app, console
from infra.errors import FleetError


def main() -> None:
    """The `fleet` entry point: platform errors end in one clear line and an exit code, not a stack trace."""
    try:
        app(standalone_mode=True)
    except FleetError as e:
        console.print(f"[red]error:[/red] {e}", soft_wrap=True, highlight=False, markup=True)
        sys.exit(e.exit_code)
