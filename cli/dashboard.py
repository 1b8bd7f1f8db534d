"""`fleet dashboard`: the live fleet dashboard."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.app import app, console, settings
from infra.errors import UsageError


@app.command("dashboard")
def dashboard(
    host: str = typer.Option(
        "127.0.0.1", help="interface to bind; any but loopback needs a login (FLEET_DASHBOARD__PASSWORD)"
    ),
    port: int = typer.Option(8050, help="port to serve on"),
    run: str | None = typer.Option(
        None, help="a demo run to look at (its own topics, model and index): its name, e.g. demo-2aae54, or 'latest'"
    ),
    work: Path = typer.Option(Path(".fleet/demo"), help="the demo's work directory, where --run looks"),
    refresh_s: float = typer.Option(5.0, help="seconds between live updates"),
) -> None:
    """Serve the fleet dashboard: success over time per version with rollout events, canary against
    champion, robots and tasks, latency and ingest health, and an episode browser with videos."""
    from dashboard.app import DashboardServer

    config = settings()
    if run is not None:
        runs = sorted((work / "runs").glob("*"), key=lambda p: p.stat().st_mtime) if (work / "runs").exists() else []
        if run == "latest" and not runs:
            raise UsageError(f"no demo runs in {work / 'runs'}", hint="run `fleet demo` first")
        run = runs[-1].name if run == "latest" else run
        config = config.isolated(run, work / "runs" / run)
    server = DashboardServer(config, host, port, refresh_s)
    console.print(
        f"dashboard at {server.url} (reading {config.index_where}, model {config.registry.model_name}); Ctrl-C stops it"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()
