"""`fleet demo` and `fleet data-plane-demo`: the whole loop from nothing, and the data plane alone."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cli.app import app, console, progress, settings, start_stack, write_json
from cli.episodes import print_summary
from infra.errors import UsageError


@app.command("demo")
def demo(
    profile: str = typer.Option(
        "quick",
        help="quick (the full loop, minutes), turned (the same, the fleet's arms turned from the logs') or ci (tiny, for tests)",
    ),
    work: Path = typer.Option(Path(".fleet/demo"), help="base training and round runs; a rerun reuses the base policy"),
    out: Path = typer.Option(Path("out/demo.json"), help="where to write the JSON result"),
) -> None:
    """The whole loop from nothing: base training, a fleet, improvement rounds with canary and rollback."""
    import uuid

    from flows.config import DEMO_PROFILES
    from infra import stack
    from infra.clients import use_prefect

    if profile not in DEMO_PROFILES:
        raise UsageError(f"unknown profile {profile!r}", hint=f"profiles: {', '.join(DEMO_PROFILES)}")
    use_prefect(fleet := settings())  # before Prefect is imported, or it starts a server of its own
    from prefect import tags

    from flows.fleet_demo import fleet_demo
    from flows.learning_curve import draw_learning_curve

    start_stack(fleet)
    run = f"demo-{uuid.uuid4().hex[:6]}"  # its own topics, registered model and index
    fleet = fleet.isolated(run, work / "runs" / run)
    stack.ensure_topics(fleet)
    with progress() as bars:
        ids = {}

        def bar(stage: str, steps: int):
            ids[stage] = bars.add_task(f"base {stage}", total=steps)
            return lambda step, loss: bars.update(ids[stage], completed=step)

        with tags(fleet.registry.flow_run_tag):
            result = fleet_demo(fleet, profile, work, bar)
    table = Table(
        "round", "champion", "candidate", "decision", "success", "95% CI", "episodes", title="fleet success per round"
    )
    for r in result["rounds"]:
        low, high = r["success_ci95"]
        table.add_row(
            str(r["round"]),
            r["champion_version"],
            str(r["candidate_version"] or "-"),
            r["decision"],
            f"{r['success_rate']:.0%}",
            f"[{low:.0%}, {high:.0%}]",
            str(r["episodes"]),
        )
    console.print(table)
    console.print(
        f"episodes published {result['episodes_published']}, indexed {result['episodes_indexed']}, "
        f"lost {result['lost']}, duplicated {result['duplicated']}; rollout propagation p95 "
        f"{result['rollout_propagation_s_p95']} s; {result['seconds']:.0f} s in all\n"
        f"MLflow UI {fleet.mlflow_tracking_uri}, Prefect UI {fleet.prefect_api_url.removesuffix('/api')}"
    )
    learned = result["learning"]
    console.print(
        f"learning, offline on the same {learned['seeds']} seeds: base v{learned['base_version']} "
        f"{learned['base_success']:.0%}, final champion v{learned['final_version']} {learned['final_success']:.0%} "
        f"({learned['final_only']} seeds only it won, {learned['base_only']} only the base); "
        f"one-sided McNemar p = {learned['p_value']}"
    )
    curve = draw_learning_curve({"fleet": result["rounds"]}, out.with_name("learning_curve.png"))
    console.print(f"learning curve: {curve}; look at it live: fleet dashboard --run {run}")
    write_json(result | {"run": run, "learning_curve": str(curve)}, out)
    if result["lost"] or result["duplicated"]:
        raise typer.Exit(1)


@app.command("data-plane-demo")
def data_plane_demo(
    episodes: int = typer.Option(200, help="synthetic episodes to stream"),
    robots: int = typer.Option(10, help="simulated robots"),
    rate: float = typer.Option(40.0, help="episodes per second the whole fleet finishes"),
    out: Path = typer.Option(Path("out/demo.json"), help="where to write the JSON result"),
) -> None:
    """Bring the stack up and stream synthetic episodes through the data plane (a Prefect flow)."""
    from infra.clients import use_prefect
    from learner.episode_index import open_index

    fleet = settings()
    start_stack(fleet)
    use_prefect(fleet)
    from flows.data_plane_demo import data_plane_demo

    result = data_plane_demo(fleet, episodes=episodes, robots=robots, rate=rate)
    with open_index(fleet) as index:
        print_summary(index)
    console.print(
        f"published {result['published']}, arrived {result['arrived']}, dead-lettered {result['dead_lettered']}, "
        f"publish-to-index latency p50 {result['latency_ms_p50']} ms, p99 {result['latency_ms_p99']} ms\n"
        f"Prefect UI {fleet.prefect_api_url.removesuffix('/api')}, MLflow UI {fleet.mlflow_tracking_uri}"
    )
    write_json(result, out)
    if result["arrived"] != result["published"]:
        raise typer.Exit(1)
