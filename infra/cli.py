"""worldfleet: a robot fleet that improves itself. Start with `fleet demo`, or `fleet stack up`.

Each sub-command is a thin shell over a library function; settings come from FLEET_* variables
or fleet.toml (see the README's configuration table).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from infra.settings import Settings

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
stack_app = typer.Typer(help="Run the embedded stack: S3, Kafka, MLflow and Prefect on loopback.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks: each measures the real path and writes JSON.", no_args_is_help=True)
episodes_app = typer.Typer(help="Look into the learner's episode index.", no_args_is_help=True)
contracts_app = typer.Typer(help="The data contracts between robots and learner.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(bench_app, name="bench")
app.add_typer(episodes_app, name="episodes")
app.add_typer(contracts_app, name="contracts")
train_app = typer.Typer(help="Train the world-model policy: three video stages, IDM, critic.", no_args_is_help=True)
app.add_typer(train_app, name="train")
rollout_app = typer.Typer(
    help="Policy versions in the MLflow registry and their rollout: champion, canary, previous.", no_args_is_help=True
)
app.add_typer(rollout_app, name="rollout")
loop_app = typer.Typer(help="The improvement loop (Prefect flows): rounds of curate, train, canary, decide.", no_args_is_help=True)
app.add_typer(loop_app, name="loop")
agents_app = typer.Typer(help="Fleet agents: simulated robots that run the policy and publish every episode.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")
console = Console()


def _settings() -> Settings:
    logging.basicConfig(level=os.environ.get("FLEET_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    return Settings()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def _with_bar(label: str, total: int, run: Callable[[Callable[[int], None]], dict]) -> dict:
    """`run(done)` under a progress bar; it calls `done(n)` with how many of `total` are done."""
    with _progress() as progress:
        bar = progress.add_task(label, total=total)
        return run(lambda n: progress.update(bar, completed=n))


def _report(result: dict, out: Path | None, keys: tuple[str, ...] | None = None) -> None:
    """A metric table on the console and the whole result as JSON in `out`."""
    table = Table("metric", "value")
    for key in keys or tuple(result):
        table.add_row(key, str(result[key]))
    console.print(table)
    _write_json(result, out)


def _write_json(result: dict, out: Path | None) -> None:
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {out}")


# -- stack ------------------------------------------------------------------------------------
@stack_app.command("up")
def stack_up(
    supervise: bool = typer.Option(True, help="restart a service whose process dies (until `down`)"),
) -> None:
    """Start every embedded service not configured to an external one; create buckets and topics."""
    from infra import stack

    settings = _settings()
    with console.status("starting the stack") as spinner:
        result = stack.up(settings, on_ready=lambda name: spinner.update(f"{name} ready"))
    if supervise:
        stack.start_supervisor(settings)
    _print_status(result)
    console.print(f"state, data and logs in {settings.state_dir}")


@stack_app.command("supervise")
def stack_supervise(interval: float = typer.Option(2.0, help="seconds between checks")) -> None:
    """Watch the services `up` started and restart any that dies (in the foreground)."""
    from infra import stack

    stack.supervise(_settings(), interval, log=console.print)


@stack_app.command("down")
def stack_down() -> None:
    """Stop the services `fleet stack up` started (and nothing else)."""
    from infra import stack

    stopped = stack.down(_settings())
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack_app.command("status")
def stack_status(as_json: bool = typer.Option(False, "--json", help="print JSON for scripts")) -> None:
    """Show each service's URL and whether it answers."""
    from infra import stack

    result = stack.status(_settings())
    if as_json:
        typer.echo(json.dumps(result))
    else:
        _print_status(result)
    raise typer.Exit(0 if all(s["healthy"] for s in result["services"].values()) else 1)


def _print_status(result: dict) -> None:
    table = Table("service", "url", "healthy", "kind")
    for name, svc in result["services"].items():
        ok = "[green]yes[/]" if svc["healthy"] else "[red]no[/]"
        table.add_row(name, svc["url"], ok, "embedded" if svc["embedded"] else "external")
    console.print(table)


# -- benchmarks -------------------------------------------------------------------------------
@bench_app.command("ingest")
def bench_ingest_cmd(
    episodes: int = typer.Option(1000, help="episodes to send"),
    robots: int = typer.Option(20, help="robot ids to spread them over (the Kafka key)"),
    camera_noise: float = typer.Option(2.0, help="sensor noise std; 0 = noise-free simulator frames"),
    rate: float = typer.Option(0.0, help="episodes/s to offer; 0 = as fast as possible"),
    out: Path = typer.Option(Path("out/bench_ingest.json"), help="where to write the JSON result"),
) -> None:
    """Publisher -> S3 + Kafka -> validating ingestor -> index, with realistic episodes.

    Unpaced it measures capacity (latency then includes queueing); with --rate below capacity
    it measures the latency a robot's episode sees.
    """
    from learner.ingest_bench import bench_ingest

    result = _with_bar("publishing", episodes,
                       lambda done: bench_ingest(_settings(), episodes, robots, camera_noise, rate or None, progress=done))  # fmt: skip
    keys = ("episodes_sent", "episodes_indexed", "lost", "duplicated", "episodes_per_s", "mb_per_s", "latency_ms_p50", "latency_ms_p99")  # fmt: skip
    _report(result, out, keys)


@bench_app.command("dashboard")
def bench_dashboard_cmd(
    episodes: int = typer.Option(100_000, help="synthetic episodes in the index"),
    repeats: int = typer.Option(3, help="loads of each view"),
    work: Path = typer.Option(Path(".fleet/bench-dashboard"), help="where the index is built"),
    out: Path = typer.Option(Path("out/bench_dashboard.json"), help="where to write the JSON result"),
) -> None:
    """Each dashboard view's load time in headless Chromium, with a large episode index (target: < 2 s)."""
    from dashboard.bench import bench_dashboard

    result = _with_bar("filling the index", episodes, lambda done: bench_dashboard(episodes, work, repeats, progress=done))
    _report(result, out, ("episodes", "index_fill_s", "view_load_s_max", "view_load_s_median", "server_view_ms_median", "all_under_target"))


@bench_app.command("rollout")
def bench_rollout_cmd(
    policy: Path = typer.Option(..., help="a policy directory from `fleet train all`"),
    robots: int = typer.Option(20, help="simulated robots in the agent process"),
    swaps: int = typer.Option(6, help="champion alias changes to time"),
    batch_robots: int = typer.Option(4, help="robots per inference batch"),
    candidates: int = typer.Option(8, help="imagined futures per decision (K)"),
    out: Path = typer.Option(Path("out/bench_rollout.json"), help="where to write the JSON result"),
) -> None:
    """Alias change to every robot running the new version (p50/p95), and batched decision throughput."""
    from fleet_agent.rollout_bench import bench_rollout

    result = _with_bar("swaps", swaps, lambda done: bench_rollout(_settings(), policy, robots, swaps, batch_robots,
                                                                  candidates, progress=done))  # fmt: skip
    _report(result, out)


@bench_app.command("train")
def bench_train_cmd(
    policy: Path | None = typer.Option(None, help="a policy directory to fine-tune; unset = a fresh tiny one"),
    steps: int = typer.Option(30, help="training steps per variant"),
    batch: int = typer.Option(8, help="windows per loss per rank"),
    zero_stage: int = typer.Option(1, help="DeepSpeed ZeRO stage (0-3)"),
    work: Path = typer.Option(Path("out/bench_train"), help="scratch directory for the runs"),
    out: Path = typer.Option(Path("out/bench_train.json"), help="where to write the JSON result"),
) -> None:
    """Fine-tuning windows/s: DeepSpeed at world size 1 and 2 against plain PyTorch, same model and data."""
    from learner.train_bench import VARIANTS, bench_train

    with _progress() as progress:
        bar = progress.add_task("variants", total=len(VARIANTS))
        result = bench_train(work, policy, steps=steps, batch=batch, zero_stage=zero_stage,
                             progress=lambda name: progress.advance(bar))  # fmt: skip
    _report(result, out, ("windows_per_s", "speedup_vs_torch", "steps", "batch_per_rank", "zero_stage", "trainable_parameters"))


@bench_app.command("sim")
def bench_sim_cmd(
    steps: int = typer.Option(20_000, help="environment steps, random actions, rendering every one"),
    size: int = typer.Option(64, help="frame size: 32, 64 or 128"),
    out: Path = typer.Option(Path("out/bench_sim.json"), help="where to write the JSON result"),
) -> None:
    """Tabletop simulator speed with rendering, in this one process (one core)."""
    from fleet_agent.sim.speed import bench_sim

    result = bench_sim(steps, size)
    console.print(f"{result['steps_per_s']} steps/s ({result['us_per_step']} us/step) at {size}x{size}")
    _write_json(result, out)


@bench_app.command("policy")
def bench_policy_cmd(
    policy: Path = typer.Option(..., help="a policy directory from `fleet train all`"),
    decisions: int = typer.Option(30, help="decisions to time"),
    candidates: int = typer.Option(8, help="K imagined futures per decision"),
    out: Path = typer.Option(Path("out/bench_policy.json"), help="where to write the JSON result"),
) -> None:
    """Decision latency of plan-and-act (sampling, IDM, rejection, scoring) with per-stage timings."""
    from worldmodel.policy_bench import bench_policy

    result = bench_policy(policy, decisions, candidates)
    table = Table("stage", "ms (median)")
    for stage, ms in result["stages_ms"].items():
        table.add_row(stage, f"{ms:.1f}")
    console.print(table)
    console.print(f"decision p50 {result['decision_ms_p50']} ms, p95 {result['decision_ms_p95']} ms")
    _write_json(result, out)


# -- training and evaluation ------------------------------------------------------------------
def _train(profile: str, out: Path, only: str | None, skip: tuple[str, ...] = ()) -> None:
    from worldmodel.train import POLICY_STAGES, PROFILES, VIDEO_STAGES, train_all

    stages = (*VIDEO_STAGES, *POLICY_STAGES)
    if unknown := set(skip) - set(stages):
        raise typer.BadParameter(f"unknown stage {', '.join(sorted(unknown))}; stages: {', '.join(stages)}")
    skip = tuple(s for s in stages if (only and s != only) or s in skip)
    with _progress() as progress:
        bars = {}

        def factory(stage: str, steps: int):
            bars[stage] = progress.add_task(stage, total=steps)
            return lambda step, loss: progress.update(bars[stage], completed=step, description=f"{stage} loss {loss:.3f}")

        report = train_all(PROFILES[profile], out, factory, skip_stages=skip)
    console.print_json(json.dumps(report["timings_s"]))
    console.print(f"policy written to {out / 'policy'}")


@train_app.command("all")
def train_all_cmd(
    profile: str = typer.Option("quick", help="quick (minutes on 2 cores), full, or ci (seconds)"),
    out: Path = typer.Option(Path("out/train"), help="run directory: checkpoints, report, policy/"),
    skip: list[str] = typer.Option([], help="a stage to leave out, for ablations (repeatable): --skip pretrain --skip midtrain"),
) -> None:
    """Every stage in order; resumes from the run directory's checkpoint."""
    _train(profile, out, None, tuple(skip))


def _stage_command(stage: str, doc: str) -> None:
    def command(
        profile: str = typer.Option("quick", help="quick, full or ci"),
        out: Path = typer.Option(Path("out/train"), help="run directory shared by the stages"),
    ) -> None:
        _train(profile, out, stage)

    command.__doc__ = doc
    train_app.command(stage.replace("_", "-"))(command)


for _stage, _doc in {
    "pretrain": "Stage (a): generic 'internet' video with captions.",
    "midtrain": "Stage (b): human point-of-view video of the tasks.",
    "finetune": "Stage (c): the robot's own logs.",
    "idm": "The inverse dynamics model, on the robot's logs.",
    "idm_adapt": "The IDM again, half on futures the world model imagines from the logs' frames.",
    "critic": "The success critic, on the robot's logs.",
}.items():
    _stage_command(_stage, _doc)


@app.command("eval")
def eval_cmd(
    policy: str = typer.Option(
        ..., help="a policy directory, or a registry URI: models:/NAME/VERSION or models:/NAME@ALIAS"
    ),
    episodes: int = typer.Option(20, help="seeded episodes per split (seen, held-out)"),
    out: Path = typer.Option(Path("out/eval.json"), help="where to write the JSON result"),
    no_rejection: bool = typer.Option(
        False, "--no-rejection", help="ablation: execute candidates the planner would reject"
    ),
    no_critic: bool = typer.Option(False, "--no-critic", help="ablation: take the first candidate, not the best of K"),
) -> None:
    """Success on seen and held-out tasks against a random policy on the same seeds."""
    from registry.model_store import resolve_policy
    from worldmodel.evaluate import evaluate
    from worldmodel.planner import PlannerConfig

    config = PlannerConfig(use_rejection=not no_rejection, use_critic=not no_critic)
    directory = resolve_policy(_settings(), policy)
    with _progress() as progress:
        bar = progress.add_task("episodes", total=2 * episodes)
        result = evaluate(directory, episodes, planner_config=config, progress=lambda: progress.advance(bar))
    _report(result, out)


@app.command("diagnose")
def diagnose_cmd(
    policy: Path = typer.Option(..., help="a policy directory"),
    episodes: int = typer.Option(10, help="seeded expert episodes per question"),
    out: Path = typer.Option(Path("out/diagnose.json"), help="where to write the JSON result"),
) -> None:
    """Which part of a policy fails: the IDM on real frames, on real futures, or the imagined futures."""
    from worldmodel.diagnose import diagnose
    from worldmodel.policy import WorldModelPolicy

    with console.status("diagnosing"):
        result = diagnose(WorldModelPolicy.load(policy), episodes)
    _report(result, out)


# -- registry and rollout ---------------------------------------------------------------------
@rollout_app.command("register")
def rollout_register(
    policy: Path = typer.Option(..., help="a policy directory from `fleet train all`"),
    parent: str = typer.Option("base", help="the version it was fine-tuned from"),
    dataset: str = typer.Option("", help="the dataset manifest it was trained on (an s3:// URI)"),
    crown: bool = typer.Option(False, "--crown", help="make it champion at once (a fleet's first model)"),
) -> None:
    """Register a policy directory as a new version, with lineage tags and the sha256 of every file."""
    from registry.model_store import ModelStore
    from registry.rollout import Rollout

    settings = _settings()
    version = ModelStore(settings).register(policy, lineage={"parent_version": parent, "dataset_manifest": dataset})
    console.print(f"registered {version.uri}")
    if crown:
        Rollout(settings).crown(version.version, "crowned at registration")
        console.print(f"version {version.version} is champion")


@rollout_app.command("status")
def rollout_status(as_json: bool = typer.Option(False, "--json", help="print JSON for scripts")) -> None:
    """Every version with its rollout state, aliases, parent and evaluation figure."""
    from registry.rollout import Rollout

    status = Rollout(_settings()).status()
    if as_json:
        console.print_json(json.dumps(status))
        return
    table = Table("version", "state", "aliases", "parent", "success", "dataset", title=status["model"])
    for v in status["versions"]:
        table.add_row(v["version"], v["state"], ",".join(v["aliases"]), v["parent"], v["success_rate"], v["dataset"])
    console.print(table)


@rollout_app.command("canary")
def rollout_canary(
    version: str = typer.Argument(..., help="the registered version to try"),
    fraction: float = typer.Option(0.25, help="share of robots that run it"),
) -> None:
    """Start a canary: that share of the fleet runs VERSION, the rest the champion."""
    from registry.rollout import Rollout

    event = Rollout(_settings()).start_canary(version, fraction)
    console.print(f"version {event.version} in canary on {fraction:.0%} of robots; aliases {event.aliases}")


@rollout_app.command("promote")
def rollout_promote(reason: str = typer.Option("promoted by an operator", help="recorded with the transition")) -> None:
    """Make the canary champion; the old champion becomes `previous`."""
    from registry.rollout import Rollout

    event = Rollout(_settings()).promote(reason)
    console.print(f"version {event.version} is champion; aliases {event.aliases}")


@rollout_app.command("rollback")
def rollout_rollback(
    to: str | None = typer.Option(None, "--to", help="the version to restore as champion"),
    reason: str = typer.Option("rolled back by an operator", help="recorded with the transition"),
) -> None:
    """End the canary; with none running, restore `previous` (or --to VERSION) as champion."""
    from registry.rollout import Rollout

    event = Rollout(_settings()).rollback(to, reason)
    console.print(f"version {event.version} is now {event.state.value}; aliases {event.aliases}")


# -- the improvement loop ---------------------------------------------------------------------
def _round_config(steps: int, world_size: int, zero_stage: int, canary_fraction: float, min_episodes: int,
                  eval_episodes: int, replay: Path | None):  # fmt: skip
    from flows.improvement import RoundConfig
    from learner.finetune import FinetuneJob
    from registry.analysis import AnalysisConfig

    return RoundConfig(finetune=FinetuneJob(steps=steps, zero_stage=zero_stage), world_size=world_size,
                       canary_fraction=canary_fraction, analysis=AnalysisConfig(min_episodes=min_episodes),
                       eval_episodes=eval_episodes, replay_dir=replay)  # fmt: skip


_STEPS = typer.Option(200, help="fine-tuning steps per round")
_WORLD = typer.Option(1, help="DeepSpeed ranks (processes) for fine-tuning")
_ZERO = typer.Option(1, help="DeepSpeed ZeRO stage")
_FRACTION = typer.Option(0.5, help="share of robots that run the canary")
_MIN_EPISODES = typer.Option(30, help="episodes per arm before the canary analysis may decide")
_EVAL = typer.Option(20, help="seeded evaluation episodes per split for candidate and champion")
_REPLAY = typer.Option(None, help="a training set (learner.dataset.save_clips layout) mixed into every fine-tune, "
                                  "e.g. the robot logs the champion was trained on")  # fmt: skip


@loop_app.command("round")
def loop_round(steps: int = _STEPS, world_size: int = _WORLD, zero_stage: int = _ZERO, canary_fraction: float = _FRACTION,
               min_episodes: int = _MIN_EPISODES, eval_episodes: int = _EVAL, replay: Path | None = _REPLAY,
               round_id: int = typer.Option(1, help="names the round's run directory (a rerun resumes it)")) -> None:  # fmt: skip
    """Run one improvement round now, on what the fleet has published (agents must be running)."""
    from infra.clients import use_prefect

    use_prefect(settings := _settings())  # before Prefect is imported, or it starts a server of its own
    from prefect import tags

    from flows.improvement import improvement_round

    config = _round_config(steps, world_size, zero_stage, canary_fraction, min_episodes, eval_episodes, replay)
    with tags(settings.registry.flow_run_tag):
        report = improvement_round(settings, config, round_id)
    console.print_json(json.dumps({k: v for k, v in report.items() if k != "evaluation"}, default=str))


@loop_app.command("serve")
def loop_serve(steps: int = _STEPS, world_size: int = _WORLD, zero_stage: int = _ZERO, canary_fraction: float = _FRACTION,
               min_episodes: int = _MIN_EPISODES, eval_episodes: int = _EVAL, replay: Path | None = _REPLAY,
               min_new_successes: int = typer.Option(20, help="successful episodes since the last round that trigger one"),
               cron: str | None = typer.Option(None, help="also run on this schedule, e.g. '0 */6 * * *'")) -> None:  # fmt: skip
    """Serve `improvement_loop` as a Prefect deployment (visible in the Prefect UI) until Ctrl-C."""
    from infra.clients import use_prefect

    use_prefect(settings := _settings())  # before Prefect is imported, or it starts a server of its own
    from flows.improvement import improvement_loop

    config = _round_config(steps, world_size, zero_stage, canary_fraction, min_episodes, eval_episodes, replay)
    console.print(f"serving improvement-loop; Prefect UI {settings.prefect_api_url.removesuffix('/api')}")
    improvement_loop.serve(name="fleet-improvement", cron=cron, tags=[settings.registry.flow_run_tag],
                           parameters={"config": config, "rounds": 1, "min_new_successes": min_new_successes})


# -- agents -----------------------------------------------------------------------------------
@agents_app.command("run")
def agents_run(
    robots: int = typer.Option(4, help="simulated robots in this process"),
    episodes: int | None = typer.Option(None, help="stop after this many episodes in total; unset = run until Ctrl-C"),
    duration: float | None = typer.Option(None, help="stop after this many seconds"),
    split: str = typer.Option("seen", help="task family: seen, heldout or all"),
    seed: int = typer.Option(0, help="first task seed; each episode takes the next"),
    candidates: int = typer.Option(8, help="imagined futures per decision (K)"),
    batch_robots: int = typer.Option(8, help="robots per inference batch"),
    robot_prefix: str = typer.Option("robot", help="robot ids are PREFIX-000, PREFIX-001, ..."),
    metrics_port: int | None = typer.Option(None, help="serve Prometheus metrics on 127.0.0.1:PORT"),
) -> None:
    """Run robots on the registry's champion (canary on a share of them), publishing every episode.

    Models are loaded by alias from MLflow and checked against the sha256 the registry recorded;
    a rollout event swaps them between decisions. Telemetry goes to the telemetry topic.
    """
    from fleet_agent import metrics
    from fleet_agent.fleet import Fleet, FleetConfig
    from worldmodel.planner import PlannerConfig

    settings = _settings()
    port = metrics_port or settings.agent.metrics_port
    if port:
        metrics.serve(port)
    config = FleetConfig(robots=robots, split=split, seed=seed, id_prefix=robot_prefix, batch_robots=batch_robots,
                         planner=PlannerConfig(candidates=candidates))  # fmt: skip
    fleet = Fleet(settings, config)
    wins = 0

    def show(core, progress, bar):
        nonlocal wins
        wins += core.success
        done = progress.tasks[bar].completed + 1
        versions = ",".join(sorted({r.version for r in fleet.robots}))
        progress.update(bar, advance=1, description=f"episodes (success {wins / done:.0%}, versions {versions})")

    try:
        with _progress() as progress:
            bar = progress.add_task("episodes", total=episodes)
            fleet.run(episodes, duration, on_episode=lambda core: show(core, progress, bar))
    except KeyboardInterrupt:
        console.print("stopping: publishing what is spooled")
    finally:
        drained = fleet.close()
    console.print(f"{len(fleet.published)} episodes, {wins} successes; spool {'drained' if drained else 'NOT drained'}")


# -- episodes ---------------------------------------------------------------------------------
@episodes_app.command("summary")
def episodes_summary() -> None:
    """Episodes and success per robot and task in the learner's index."""
    from learner.episode_index import EpisodeIndex

    settings = _settings()
    index = EpisodeIndex(settings.index_path)
    _print_summary(index)
    index.close()


def _print_summary(index) -> None:
    for by, title in (("robot_id", "robot"), ("task_id", "task")):
        table = Table(title, "episodes", "success", "last seen", title=f"per {title}")
        for key, n, successes, last in index.summary(by):
            table.add_row(key, str(n), f"{successes / n:.0%}", datetime.fromtimestamp(last).strftime("%H:%M:%S"))
        console.print(table)
    console.print(f"{index.count()} episodes in {index.path}")


# -- dashboard --------------------------------------------------------------------------------
@app.command("dashboard")
def dashboard_cmd(
    host: str = typer.Option("127.0.0.1", help="interface to bind; it has no login, so loopback unless you mean it"),
    port: int = typer.Option(8050, help="port to serve on"),
    run: str | None = typer.Option(None, help="a demo run to look at (its own topics, model and index): "
                                              "its name, e.g. demo-2aae54, or 'latest'"),  # fmt: skip
    work: Path = typer.Option(Path(".fleet/demo"), help="the demo's work directory, where --run looks"),
    refresh_s: float = typer.Option(5.0, help="seconds between live updates"),
) -> None:
    """Serve the fleet dashboard: success over time per version with rollout events, canary against
    champion, robots and tasks, latency and ingest health, and an episode browser with videos."""
    from dashboard.app import DashboardServer

    settings = _settings()
    if run is not None:
        runs = sorted((work / "runs").glob("*"), key=lambda p: p.stat().st_mtime) if (work / "runs").exists() else []
        if run == "latest" and not runs:
            raise typer.BadParameter(f"no demo runs in {work / 'runs'}; run `fleet demo` first")
        run = runs[-1].name if run == "latest" else run
        settings = settings.isolated(run, work / "runs" / run)
    server = DashboardServer(settings, host, port, refresh_s)
    console.print(f"dashboard at {server.url} (reading {settings.index_path}, model {settings.registry.model_name}); Ctrl-C stops it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()


# -- contracts --------------------------------------------------------------------------------
@contracts_app.command("export")
def contracts_export() -> None:
    """Rewrite the episode JSON Schema checked into the repo."""
    from infra.contracts.episode import export_schema

    console.print(f"wrote {export_schema()}")


# -- demo -------------------------------------------------------------------------------------
@app.command("demo")
def demo(
    profile: str = typer.Option("quick", help="quick (the full loop, minutes) or ci (tiny, for tests)"),
    work: Path = typer.Option(Path(".fleet/demo"), help="base training and round runs; a rerun reuses the base policy"),
    out: Path = typer.Option(Path("out/demo.json"), help="where to write the JSON result"),
) -> None:
    """The whole loop from nothing: base training, a fleet, improvement rounds with canary and rollback."""
    import uuid

    from infra import stack
    from infra.clients import use_prefect

    use_prefect(settings := _settings())  # before Prefect is imported, or it starts a server of its own
    from prefect import tags

    from flows.fleet_demo import DEMO_PROFILES, fleet_demo

    if profile not in DEMO_PROFILES:
        raise typer.BadParameter(f"unknown profile {profile}; profiles: {', '.join(DEMO_PROFILES)}")
    with console.status("starting the stack") as spinner:
        stack.up(settings, on_ready=lambda name: spinner.update(f"{name} ready"))
    stack.start_supervisor(settings)
    run = f"demo-{uuid.uuid4().hex[:6]}"  # its own topics, registered model and index
    settings = settings.isolated(run, work / "runs" / run)
    stack.ensure_topics(settings)
    with _progress() as progress:
        bars = {}

        def factory(stage: str, steps: int):
            bars[stage] = progress.add_task(f"base {stage}", total=steps)
            return lambda step, loss: progress.update(bars[stage], completed=step)

        with tags(settings.registry.flow_run_tag):
            result = fleet_demo(settings, profile, work, factory)
    table = Table("round", "champion", "candidate", "decision", "success", "95% CI", "episodes", title="fleet success per round")
    for r in result["rounds"]:
        table.add_row(str(r["round"]), r["champion_version"], str(r["candidate_version"] or "-"), r["decision"],
                      f"{r['success_rate']:.0%}", f"[{r['success_ci95'][0]:.0%}, {r['success_ci95'][1]:.0%}]", str(r["episodes"]))  # fmt: skip
    console.print(table)
    console.print(f"episodes published {result['episodes_published']}, indexed {result['episodes_indexed']}, "
                  f"lost {result['lost']}, duplicated {result['duplicated']}; rollout propagation p95 "
                  f"{result['rollout_propagation_s_p95']} s; {result['seconds']:.0f} s in all\n"
                  f"MLflow UI {settings.mlflow_tracking_uri}, Prefect UI {settings.prefect_api_url.removesuffix('/api')}")  # fmt: skip
    console.print(f"look at it: fleet dashboard --run {run}")
    _write_json(result | {"run": run}, out)
    if result["lost"] or result["duplicated"]:
        raise typer.Exit(1)


@app.command("data-plane-demo")
def data_plane_demo_cmd(
    episodes: int = typer.Option(200, help="synthetic episodes to stream"),
    robots: int = typer.Option(10, help="simulated robots"),
    rate: float = typer.Option(40.0, help="episodes per second the whole fleet finishes"),
    out: Path = typer.Option(Path("out/demo.json"), help="where to write the JSON result"),
) -> None:
    """Bring the stack up and stream synthetic episodes through the data plane (a Prefect flow)."""
    from infra import stack
    from infra.clients import use_prefect
    from learner.episode_index import EpisodeIndex

    settings = _settings()
    with console.status("starting the stack") as spinner:
        stack.up(settings, on_ready=lambda name: spinner.update(f"{name} ready"))
    stack.start_supervisor(settings)
    use_prefect(settings)
    from flows.data_plane_demo import data_plane_demo

    result = data_plane_demo(settings, episodes=episodes, robots=robots, rate=rate)
    index = EpisodeIndex(settings.index_path)
    _print_summary(index)
    index.close()
    console.print(
        f"published {result['published']}, arrived {result['arrived']}, dead-lettered {result['dead_lettered']}, "
        f"publish-to-index latency p50 {result['latency_ms_p50']} ms, p99 {result['latency_ms_p99']} ms\n"
        f"Prefect UI {settings.prefect_api_url.removesuffix('/api')}, MLflow UI {settings.mlflow_tracking_uri}"
    )
    _write_json(result, out)
    if result["arrived"] != result["published"]:
        raise typer.Exit(1)


def main() -> None:
    """The `fleet` entry point: platform errors end in one clear line, not a stack trace."""
    from fleet_agent.models import NoChampion
    from infra.clients import ServiceUnavailable
    from registry.model_store import TamperedModel
    from registry.rollout import RolloutError

    try:
        app()
    except (ServiceUnavailable, TamperedModel, RolloutError, NoChampion) as e:
        console.print(f"[red]error:[/red] {e}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
