"""`fleet rollout`: policy versions in the MLflow registry and their rollout."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from cli.app import console, group, settings

rollout_app = group("rollout", "Policy versions in the MLflow registry and their rollout: champion, canary, previous.")


@rollout_app.command("register")
def register(
    policy: Path = typer.Option(..., help="a policy directory from `fleet train all`"),
    parent: str = typer.Option("base", help="the version it was fine-tuned from"),
    dataset: str = typer.Option("", help="the dataset manifest it was trained on (an s3:// URI)"),
    crown: bool = typer.Option(False, "--crown", help="make it champion at once (a fleet's first model)"),
) -> None:
    """Register a policy directory as a new version, with lineage tags and the sha256 of every file."""
    from registry.model_store import ModelStore
    from registry.rollout import Rollout
    from worldmodel.policy import WorldModelPolicy

    config = settings()
    lineage = {"parent_version": parent, "dataset_manifest": dataset}
    version = ModelStore(config).register(WorldModelPolicy.locate(policy), lineage=lineage)
    console.print(f"registered {version.uri}")
    if crown:
        Rollout(config).crown(version.version, "crowned at registration")
        console.print(f"version {version.version} is champion")


@rollout_app.command("public-key")
def public_key() -> None:
    """Print the learner's public key: give it to robots as FLEET_REGISTRY__VERIFY_KEY.

    The learner signs every version it registers with its private key (registry.signing_key_file,
    made on first use); robots load only versions whose signature this key verifies."""
    from registry.signing import public_key_text

    console.print(public_key_text(settings()))


@rollout_app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="print JSON for scripts")) -> None:
    """Every version with its rollout state, aliases, parent and evaluation figure."""
    from registry.rollout import Rollout

    result = Rollout(settings()).status()
    if as_json:
        console.print_json(json.dumps(result))
        return
    table = Table("version", "state", "aliases", "parent", "success", "dataset", title=result["model"])
    for v in result["versions"]:
        table.add_row(v["version"], v["state"], ",".join(v["aliases"]), v["parent"], v["success_rate"], v["dataset"])
    console.print(table)


@rollout_app.command("canary")
def canary(
    version: str = typer.Argument(..., help="the registered version to try"),
    fraction: float = typer.Option(0.25, help="share of robots that run it"),
) -> None:
    """Start a canary: that share of the fleet runs VERSION, the rest the champion."""
    from registry.rollout import Rollout

    event = Rollout(settings()).start_canary(version, fraction)
    console.print(f"version {event.version} in canary on {fraction:.0%} of robots; aliases {event.aliases}")


@rollout_app.command("promote")
def promote(
    version: str | None = typer.Argument(None, help="the canary's version; refused if the canary is another one"),
    reason: str = typer.Option("promoted by an operator", help="recorded with the transition"),
) -> None:
    """Make the canary champion; the old champion becomes `previous`. Safe to repeat: an interrupted
    promotion is completed, a finished one announced again."""
    from registry.rollout import Rollout

    event = Rollout(settings()).promote(version, reason)
    console.print(f"version {event.version} is champion; aliases {event.aliases}")


@rollout_app.command("rollback")
def rollback(
    to: str | None = typer.Option(None, "--to", help="the version to restore as champion"),
    reason: str = typer.Option("rolled back by an operator", help="recorded with the transition"),
) -> None:
    """End the canary; with none running, restore `previous` (or --to VERSION) as champion."""
    from registry.rollout import Rollout

    event = Rollout(settings()).rollback(to, reason)
    console.print(f"version {event.version} is now {event.state.value}; aliases {event.aliases}")


@rollout_app.command("history")
def history(as_json: bool = typer.Option(False, "--json", help="print JSON for scripts")) -> None:
    """Every rollout transition, oldest first, from the append-only log in S3."""
    from registry.rollout import Rollout

    events = Rollout(settings()).history()
    if as_json:
        console.print_json(json.dumps([e.model_dump(mode="json") for e in events]))
        return
    table = Table("at (UTC)", "version", "from", "to", "aliases after", "reason")
    for e in events:
        aliases = ", ".join(f"{a}={v}" for a, v in sorted(e.aliases.items()))
        previous = e.previous_state.value if e.previous_state else ""
        table.add_row(f"{e.at:%Y-%m-%d %H:%M:%S}", e.version, previous, e.state.value, aliases, e.reason)
    console.print(table)
