"""The `fleet` command line: one module per command group, each command a thin shell over a
library function; every expected failure is a `FleetError`, printed here as one line."""

from __future__ import annotations

import sys

from pydantic import ValidationError
from rich.markup import escape

from cli import (  # noqa: F401
    agents,
    bench,
    contracts,
    dashboard,
    demo,
    episodes,
    export,
    imports,
    loop,
    policy,
    rollout,
    stack,
    train,
)
from cli.app import app, console
from infra.errors import FleetError, UsageError


def main() -> None:
    """The `fleet` entry point: platform errors end in one clear line and an exit code, not a stack trace."""
    try:
        app(standalone_mode=True)
    except FleetError as e:
        _fail(str(e), e.exit_code)
    except ValidationError as e:  # a configuration out of range, from an option, FLEET_* or fleet.toml
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or e.title}: {err['msg']}" for err in e.errors())
        _fail(f"invalid {e.title}: {problems}", UsageError.exit_code)


def _fail(message: str, code: int) -> None:
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    sys.exit(code)
