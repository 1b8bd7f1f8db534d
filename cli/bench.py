"""`fleet bench`: each benchmark measures the real path and writes JSON (implementations in `benchmarks/`)."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import typer
from rich.table import Table

from cli.app import console, group, progress, report, settings, start_stack, with_bar, write_json
from infra.errors import UsageError
from infra.settings import AgentSettings

bench_app = group("bench", "Benchmarks: each measures the real path and writes JSON.")
KEEP = typer.Option(
    False, "--keep", help="keep what the run made (its topics, media, spool and index); by default it is removed"
)


@bench_app.command("ingest")
def ingest(
    episodes: int = typer.Option(1000, help="episodes to send"),
    robots: int = typer.Option(20, help="robot ids to spread them over (the Kafka key)"),
    camera_noise: float = typer.Option(2.0, help="sensor noise std; 0 = noise-free simulator frames"),
    rate: float = typer.Option(0.0, help="episodes/s to offer; 0 = as fast as possible"),
    codec: str = typer.Option(
        "h264", help="how frames travel: h264 (as a camera fleet ships them: lossy, 20x smaller) or zstd (exactly)"
    ),
    encode_ahead: bool = typer.Option(
        True,
        "--encode-ahead/--encode-here",
        help="encode every episode's media before the clock starts, as robots do on their own CPUs,"
        " or here, on the learner's cores, inside the clock",
    ),
    keep: bool = KEEP,
    out: Path = typer.Option(Path("out/bench_ingest.json"), help="where to write the JSON result"),
) -> None:
    """Publisher -> S3 + Kafka -> validating ingestor -> index, with realistic episodes.

    Unpaced it measures capacity (latency then includes queueing); with --rate below capacity
    it measures the latency a robot's episode sees. The defaults are a camera fleet's: frames as
    H.264, encoded on the robots' own CPUs before the clock starts (--encode-here puts that work
    on these cores, inside the clock; encode_ms_per_episode says what it costs either way).
    cpu_s says where the cores went: CPU seconds of the publisher, the ingest worker, and the
    embedded S3 and broker. machine_reference_ms times one fixed piece of work before and after
    the run: on a shared machine, compare runs whose references agree.
    """
    from benchmarks.ingest import bench_ingest

    codecs = get_args(AgentSettings.model_fields["media_codec"].annotation)
    if codec and codec not in codecs:
        raise UsageError(f"unknown codec {codec!r}", hint=f"codecs: {', '.join(codecs)}")
    result = with_bar(
        "publishing",
        episodes,
        lambda done: bench_ingest(
            settings(), episodes, robots, camera_noise, rate or None, codec, encode_ahead, keep, done
        ),
    )
    keys = (
        "episodes_sent",
        "episodes_indexed",
        "lost",
        "duplicated",
        "episodes_per_s",
        "mb_per_s",
        "mb_per_episode",
        "encode_ms_per_episode",
        "latency_ms_p50",
        "latency_ms_p99",
        "cpu_s",
        "machine_reference_ms",
    )
    report(result, out, keys)


@bench_app.command("fleet")
def fleet(
    robots: int = typer.Option(1000, help="simulated robots, each with its own id, episodes and heartbeats"),
    duration: float = typer.Option(120.0, help="seconds the robots run"),
    episode_s: float = typer.Option(60.0, help="seconds between a robot's episodes"),
    learners: int = typer.Option(2, help="learner processes in one consumer group"),
    dashboard_episodes: int = typer.Option(1_000_000, help="indexed episodes for the dashboard's view times"),
    keep: bool = KEEP,
    out: Path = typer.Option(Path("out/bench_fleet.json"), help="where to write the JSON result"),
) -> None:
    """A fleet of light simulated robots through the real stack: learner lag, the canary's catch-up on
    telemetry, a round's incremental load, and dashboard view times (Chromium) at a million episodes.

    The robots replay synthetic episodes (small frames) through the real publisher and telemetry
    topic; `--learners` processes index them. With FLEET_LEARNER__INDEX_URL they share PostgreSQL.
    Goals: every dashboard view under 2 s, canary catch-up under 5 s.
    """
    from benchmarks.fleet_scale import bench_fleet

    total = int(robots / episode_s * duration)
    result = with_bar(
        f"{robots} robots publishing",
        total,
        lambda done: bench_fleet(
            settings(), robots, duration, episode_s, learners, dashboard_episodes, keep=keep, progress=done
        ),
    )
    keys = (
        "robots",
        "episodes_published",
        "episodes_indexed",
        "lost",
        "learner_lag_s_p95",
        "canary_catchup_s",
        "round_load_s",
        "dashboard_view_s",
        "all_views_under_2_s",
    )
    report(result, out, keys)


@bench_app.command("dashboard")
def dashboard(
    episodes: int = typer.Option(100_000, help="synthetic episodes in the index"),
    repeats: int = typer.Option(3, help="loads of each view"),
    work: Path = typer.Option(Path(".fleet/bench-dashboard"), help="where the index is built"),
    out: Path = typer.Option(Path("out/bench_dashboard.json"), help="where to write the JSON result"),
) -> None:
    """Each dashboard view's load time in headless Chromium, with a large episode index (target: < 2 s)."""
    from benchmarks.dashboard import bench_dashboard

    result = with_bar(
        "filling the index", episodes, lambda done: bench_dashboard(episodes, work, repeats, progress=done)
    )
    keys = (
        "episodes",
        "index_fill_s",
        "view_load_s_max",
        "view_load_s_median",
        "server_view_ms_median",
        "all_under_target",
    )
    report(result, out, keys)


@bench_app.command("rollout")
def rollout(
    policy: Path = typer.Option(..., help="a policy directory from `fleet train all`"),
    robots: int = typer.Option(20, help="simulated robots in the agent process"),
    swaps: int = typer.Option(6, help="champion alias changes to time"),
    batch_robots: int = typer.Option(4, help="robots per inference batch"),
    candidates: int = typer.Option(8, help="imagined futures per decision (K)"),
    out: Path = typer.Option(Path("out/bench_rollout.json"), help="where to write the JSON result"),
) -> None:
    """Alias change to every robot running the new version (p50/p95), and batched decision throughput."""
    from benchmarks.rollout import bench_rollout

    result = with_bar(
        "swaps",
        swaps,
        lambda done: bench_rollout(settings(), policy, robots, swaps, batch_robots, candidates, progress=done),
    )
    report(result, out)


@bench_app.command("train")
def train(
    policy: Path | None = typer.Option(None, help="a policy directory to fine-tune; unset = a fresh tiny one"),
    steps: int = typer.Option(30, help="training steps per variant"),
    batch: int = typer.Option(8, help="windows per loss per rank"),
    zero_stage: int = typer.Option(1, help="DeepSpeed ZeRO stage (0-3)"),
    work: Path = typer.Option(Path("out/bench_train"), help="scratch directory for the runs"),
    out: Path = typer.Option(Path("out/bench_train.json"), help="where to write the JSON result"),
) -> None:
    """Fine-tuning windows/s: DeepSpeed at world size 1 and 2 against plain PyTorch, same model and data."""
    from benchmarks.train import VARIANTS, bench_train

    with progress() as bars:
        bar = bars.add_task("variants", total=len(VARIANTS))
        result = bench_train(
            work, policy, steps=steps, batch=batch, zero_stage=zero_stage, progress=lambda name: bars.advance(bar)
        )
    keys = ("windows_per_s", "speedup_vs_torch", "steps", "batch_per_rank", "zero_stage", "trainable_parameters")
    report(result, out, keys)


@bench_app.command("sim")
def sim(
    steps: int = typer.Option(20_000, help="environment steps, random actions, rendering every one"),
    size: int = typer.Option(64, help="frame size: 32, 64 or 128"),
    out: Path = typer.Option(Path("out/bench_sim.json"), help="where to write the JSON result"),
) -> None:
    """Tabletop simulator speed with rendering, in this one process (one core)."""
    from benchmarks.sim import bench_sim

    result = bench_sim(steps, size)
    console.print(f"{result.steps_per_s} steps/s ({result.us_per_step} us/step) at {size}x{size}")
    write_json(result, out)


@bench_app.command("media-codecs")
def media_codecs(
    episodes: int = typer.Option(20, help="episodes of rendered frames per kind"),
    frames: int = typer.Option(60, help="frames per episode (the tabletop's 60 steps)"),
    noise: float = typer.Option(2.0, help="camera-like sensor noise, std in grey levels"),
    out: Path = typer.Option(Path("out/bench_media_codecs.json"), help="where to write the JSON result"),
) -> None:
    """Bytes per episode of the robot's frames as the data plane ships them (npy+zstd) against
    H.264 at CRF 10 and 23, with encode and decode time and the mean error H.264 adds, on
    camera-like and noise-free frames. In this one process."""
    from benchmarks.media_codecs import bench_media_codecs

    result = bench_media_codecs(episodes, frames, noise=noise)
    table = Table("frames", "codec", "KiB/episode", "encode ms", "decode ms", "mean abs error")
    for kind in ("camera_like", "noise_free"):
        for row in getattr(result, kind):
            table.add_row(
                kind,
                row.codec,
                str(row.kib_per_episode),
                str(row.encode_ms_per_episode),
                str(row.decode_ms_per_episode),
                str(row.mean_abs_error),
            )
    console.print(table)
    console.print(f"raw: {result.raw_kib_per_episode} KiB/episode")
    write_json(result, out)


@bench_app.command("policy")
def policy(
    policy: Path = typer.Option(..., help="a policy directory from `fleet train all`"),
    decisions: int = typer.Option(30, help="decisions to time"),
    candidates: int = typer.Option(8, help="K imagined futures per decision"),
    sample_steps: int | None = typer.Option(None, help="sampler steps when imagining (unset: the policy's own)"),
    out: Path = typer.Option(Path("out/bench_policy.json"), help="where to write the JSON result"),
) -> None:
    """Decision latency of plan-and-act, wall clock around the whole decision, with the planner's
    stage timings (sampling, IDM, rejection, scoring) beside it."""
    from benchmarks.policy import bench_policy

    result = bench_policy(policy, decisions, candidates, sample_steps=sample_steps)
    table = Table("stage", "ms (median)")
    for stage, ms in result.stages_ms.items():
        table.add_row(stage, f"{ms:.1f}")
    console.print(table)
    console.print(
        f"decision p50 {result.decision_ms_p50} ms, p95 {result.decision_ms_p95} ms (wall clock); "
        f"stage timers add up to {result.stage_sum_ms_p50} ms at p50"
    )
    write_json(result, out)


@bench_app.command("data-scaling")
def data_scaling(
    logs: list[int] = typer.Option([25, 50, 100, 200], help="robot-log counts to train with (repeatable)"),
    profile: str = typer.Option("quick", help="training profile, the same steps for every count: quick, full, ci"),
    episodes: int = typer.Option(100, help="seeded evaluation episodes per split"),
    work: Path = typer.Option(Path(".fleet/bench-data-scaling"), help="run directories, one per count (resumable)"),
    plot: Path = typer.Option(Path("out/data_scaling.png"), help="where to draw the curve"),
    out: Path = typer.Option(Path("out/bench_data_scaling.json"), help="where to write the JSON result"),
) -> None:
    """Success with 95% intervals against the number of robot logs, at fixed training compute."""
    from benchmarks.data_scaling import bench_data_scaling
    from worldmodel.train import PROFILES

    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}", hint=f"profiles: {', '.join(PROFILES)}")

    def after_each(done):
        def show(partial):  # the JSON and the plot so far, in case the bench is stopped
            done(len(partial.points))
            write_json(partial, out)

        return show

    result = with_bar(
        "training and evaluating",
        len(logs),
        lambda done: bench_data_scaling(logs, profile, episodes, work, plot, after_each(done)),
    )
    table = Table("robot logs", "seen", "95% CI", "held-out", "95% CI", "train s")
    for p in result.points:
        table.add_row(*(str(v) for v in (p.robot_logs, p.seen, p.seen_ci95, p.heldout, p.heldout_ci95, p.train_s)))
    console.print(table)
    console.print(f"plot: {result.plot}")
    write_json(result, out)


@bench_app.command("learning")
def learning(
    profile: str = typer.Option(
        "quick", help="the demo's profile both arms run: quick, turned (the fleet's arms turned from the logs') or ci"
    ),
    work: Path = typer.Option(Path(".fleet/bench-learning"), help="the shared base and each arm's rounds"),
    base: str | None = typer.Option(
        None,
        help="the base both arms start from: demo (the demo's lighter base) or a `fleet train` profile "
        "(quick, full, ci); unset: the profile's. A base already in WORK/base is reused: give each its own --work",
    ),
    rounds: int | None = typer.Option(None, min=1, help="improvement rounds each arm runs; unset: the profile's"),
    plot: Path = typer.Option(Path("out/learning_fleet_vs_control.png"), help="where to draw both arms' curves"),
    out: Path = typer.Option(Path("out/bench_learning.json"), help="where to write the JSON result"),
    fleet_share: float | None = typer.Option(
        None, min=0, max=1, help="the fleet arm's share of each critic batch (and IDM batch); unset: the profile's"
    ),
    idm_fleet_share: float | None = typer.Option(
        None, min=0, max=1, help="the fleet arm's share of each IDM batch; unset: the profile's"
    ),
    video_fleet_share: float | None = typer.Option(
        None, min=0, max=1, help="the fleet arm's share of each world-model batch; unset: the profile's"
    ),
) -> None:
    """The demo's rounds with the fleet's episodes, then again on replayed logs alone (a control):
    both arms' curves, and their final champions paired on the same seeds."""
    from flows.config import DEMO_PROFILES
    from infra.clients import use_prefect
    from worldmodel.train import PROFILES

    if profile not in DEMO_PROFILES:
        raise UsageError(f"unknown profile {profile!r}", hint=f"profiles: {', '.join(DEMO_PROFILES)}")
    if base not in (None, "demo", *PROFILES):
        raise UsageError(f"unknown base {base!r}", hint=f"bases: demo, {', '.join(PROFILES)}")
    use_prefect(fleet := settings())  # before Prefect is imported, or it starts a server of its own
    from prefect import tags

    from benchmarks.learning import bench_learning

    start_stack(fleet)
    with progress() as bars, tags(fleet.registry.flow_run_tag):

        def bar(stage: str, steps: int):
            task = bars.add_task(stage, total=steps)
            return lambda step, loss: bars.update(task, completed=step)

        shares = {
            "fleet_share": fleet_share,
            "idm_fleet_share": idm_fleet_share,
            "video_fleet_share": video_fleet_share,
        }
        result = bench_learning(fleet, profile, work, plot, bar, base, rounds, **shares)
    table = Table(
        "arm", "fleet share (IDM / critic / world model)", "base", "final", "one-sided p (final > base)", "lost"
    )
    for name, arm in result.arms.items():
        learned = arm.learning
        table.add_row(
            name,
            f"{arm.idm_fleet_share:.2f} / {arm.fleet_share:.2f} / {arm.video_fleet_share:.2f}",
            f"v{learned['base_version']} {learned['base_success']:.0%}",
            f"v{learned['final_version']} {learned['final_success']:.0%}",
            str(learned["p_value"]),
            str(arm.lost),
        )
    console.print(table)
    console.print(
        f"final champions on the same {result.seeds} seeds: fleet {result.fleet_final_success:.0%}, control "
        f"{result.control_final_success:.0%} ({result.fleet_only} seeds only the fleet's won, {result.control_only} "
        f"only the control's); one-sided McNemar p = {result.p_value}"
    )
    if last := result.last_candidates:
        console.print(
            f"last candidates on the same seeds: fleet {last['fleet_success']:.0%}, control "
            f"{last['control_success']:.0%} ({last['fleet_only']} seeds only the fleet's won, {last['control_only']} "
            f"only the control's); one-sided McNemar p = {last['p_value']}"
        )
    console.print(f"plot: {result.plot}")
    write_json(result, out)
