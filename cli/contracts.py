"""`fleet contracts`: the data contracts between robots and learner."""

from __future__ import annotations

from cli.app import console, group

contracts_app = group("contracts", "The data contracts between robots and learner.")


@contracts_app.command("export")
def export() -> None:
    """Rewrite the episode JSON Schema checked into the repo."""
    from infra.contracts.episode import export_schema

    console.print(f"wrote {export_schema()}")
