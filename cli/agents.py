"""`fleet agents`: simulated robots that run the policy and publish every episode."""

from __future__ import annotations

import signal
import threading

import typer

from cli.app import console, default, group, progress, settings
from fleet_agent.config import FleetConfig
from worldmodel.planner_config import PlannerConfig

agents_app = group("agents", "Fleet agents: simulated robots that run the policy and publish every episode.")


@agents_app.command("run")
def run(
    robots: int = typer.Option(default(FleetConfig, "robots"), help="simulated robots in this process"),
    episodes: int | None = typer.Option(None, help="stop after this many episodes in total; unset = run until Ctrl-C"),
    duration: float | None = typer.Option(None, help="stop after this many seconds"),
    split: str = typer.Option(default(FleetConfig, "split"), help="task family: seen, heldout or all"),
    seed: int = typer.Option(default(FleetConfig, "seed"), help="first task seed; each episode takes the next"),
    candidates: int = typer.Option(default(PlannerConfig, "candidates"), help="imagined futures per decision (K)"),
    batch_robots: int = typer.Option(default(FleetConfig, "batch_robots"), help="robots per inference batch"),
    robot_prefix: str = typer.Option(
        default(FleetConfig, "id_prefix"), help="robot ids are PREFIX-000, PREFIX-001, ..."
    ),
    metrics_port: int | None = typer.Option(None, help="serve Prometheus metrics on 127.0.0.1:PORT"),
) -> None:
    """Run robots on the registry's champion (canary on a share of them), publishing every episode.

    Models are loaded by alias from MLflow and checked against the sha256 the registry recorded;
    a rollout event swaps them between decisions. Telemetry goes to the telemetry topic.
    Ctrl-C or SIGTERM (what a service manager sends) stops between decisions and drains the spool.
    """
    from fleet_agent import metrics
    from fleet_agent.fleet import Fleet

    config = FleetConfig(
        robots=robots,
        split=split,
        seed=seed,
        id_prefix=robot_prefix,
        batch_robots=batch_robots,
        planner=PlannerConfig(candidates=candidates),
    )
    fleet_settings = settings()
    if port := metrics_port or fleet_settings.agent.metrics_port:
        metrics.serve(port)
    fleet = Fleet(fleet_settings, config)
    wins = 0

    def show(core, bars, bar):
        nonlocal wins
        wins += core.success
        done = bars.tasks[bar].completed + 1
        versions = ",".join(sorted({r.version for r in fleet.robots}))
        bars.update(bar, advance=1, description=f"episodes (success {wins / done:.0%}, versions {versions})")

    stop = threading.Event()

    def on_signal(signum, _frame):
        console.print(f"{signal.Signals(signum).name}: stopping between decisions, publishing what is spooled")
        stop.set()

    handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with progress() as bars:
            bar = bars.add_task("episodes", total=episodes)
            fleet.run(episodes, duration, on_episode=lambda core: show(core, bars, bar), stop=stop)
    finally:
        drained = fleet.close()
        for s, handler in handlers.items():
            signal.signal(s, handler)
    not_kept = f", {len(fleet.not_kept)} NOT kept (spool full)" if fleet.not_kept else ""
    console.print(
        f"{len(fleet.finished) + len(fleet.not_kept)} episodes, {wins} successes{not_kept}; "
        f"spool {'drained' if drained else 'NOT drained'}"
    )
