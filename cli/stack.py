"""`fleet stack`: the embedded services on loopback."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from cli.app import console, group, settings

stack_app = group("stack", "Run the embedded stack: S3, Kafka, MLflow and Prefect on loopback.")


@stack_app.command("up")
def up(supervise: bool = typer.Option(True, help="restart a service whose process dies (until `down`)")) -> None:
    """Start every embedded service not configured to an external one; create buckets and topics."""
    from infra import stack

    config = settings()
    with console.status("starting the stack") as spinner:
        result = stack.up(config, on_ready=lambda name: spinner.update(f"{name} ready"))
    if supervise:
        stack.start_supervisor(config)
    print_status(result)
    console.print(f"state, data and logs in {config.state_dir}")


@stack_app.command("supervise")
def supervise(interval: float = typer.Option(2.0, help="seconds between checks")) -> None:
    """Watch the services `up` started and restart any that dies (in the foreground)."""
    from infra import stack

    stack.supervise(settings(), interval, log=console.print)


@stack_app.command("down")
def down() -> None:
    """Stop the services `fleet stack up` started (and nothing else)."""
    from infra import stack

    stopped = stack.down(settings())
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack_app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="print JSON for scripts")) -> None:
    """Show each service's URL and whether it answers."""
    from infra import stack

    result = stack.status(settings())
    if as_json:
        typer.echo(json.dumps(result))
    else:
        print_status(result)
    raise typer.Exit(0 if all(s["healthy"] for s in result["services"].values()) else 1)


def print_status(result: dict) -> None:
    table = Table("service", "url", "healthy", "kind")
    for name, svc in result["services"].items():
        ok = "[green]yes[/]" if svc["healthy"] else "[red]no[/]"
        table.add_row(name, svc["url"], ok, "embedded" if svc["embedded"] else "external")
    console.print(table)


@stack_app.command("robot-credentials")
def robot_credentials(robot_id: str = typer.Argument(..., help="the robot's id, as its episodes carry it")) -> None:
    """S3 keys for one robot of the embedded S3: it may write its own episodes/ROBOT_ID/ prefix and
    nothing else (no reads, no other robot's prefix, no MLflow artifacts). Made on first request,
    the same keys after. Prints FLEET_S3__ACCESS_KEY=... and FLEET_S3__SECRET_KEY=... lines for the
    robot's environment: `export $(fleet stack robot-credentials robot-7)`."""
    from infra.stack.credentials import robot_credentials as credentials

    access, secret = credentials(settings(), robot_id)
    typer.echo(f"FLEET_S3__ACCESS_KEY={access}\nFLEET_S3__SECRET_KEY={secret}")
