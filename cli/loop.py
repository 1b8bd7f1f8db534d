"""`fleet loop`: the improvement loop as Prefect flows (curate, train, canary, decide)."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.app import console, default, group, settings
from flows.config import RoundConfig
from learner.finetune import FinetuneJob
from registry.analysis import AnalysisConfig

loop_app = group("loop", "The improvement loop (Prefect flows): rounds of curate, train, canary, decide.")

STEPS = typer.Option(default(FinetuneJob, "steps"), help="fine-tuning steps per round")
WORLD = typer.Option(default(RoundConfig, "world_size"), help="DeepSpeed ranks (processes) for fine-tuning")
ZERO = typer.Option(default(FinetuneJob, "zero_stage"), help="DeepSpeed ZeRO stage")
FRACTION = typer.Option(default(RoundConfig, "canary_fraction"), help="share of robots that run the canary")
MIN_EPISODES = typer.Option(
    default(AnalysisConfig, "min_episodes"), help="episodes per arm before the canary analysis may decide"
)
FUTILITY = typer.Option(
    default(AnalysisConfig, "futility"),
    help="keep the champion once the canary's chance of being shown not worse within its episodes is under this; "
    "0: run every canary to its end",
)
EVAL = typer.Option(
    default(RoundConfig, "eval_episodes"), help="seeded evaluation episodes per split for candidate and champion"
)
REPLAY = typer.Option(
    None,
    help="a training set (learner.dataset.save_clips layout) mixed into every fine-tune, "
    "e.g. the robot logs the champion was trained on",
)


def _round_config(
    steps: int,
    world_size: int,
    zero_stage: int,
    fraction: float,
    min_episodes: int,
    futility: float,
    eval_episodes: int,
    replay,
) -> RoundConfig:
    return RoundConfig(
        finetune=FinetuneJob(steps=steps, zero_stage=zero_stage),
        world_size=world_size,
        canary_fraction=fraction,
        analysis=AnalysisConfig(min_episodes=min_episodes, futility=futility),
        eval_episodes=eval_episodes,
        replay_dir=replay,
    )


@loop_app.command("round")
def round_now(
    steps: int = STEPS,
    world_size: int = WORLD,
    zero_stage: int = ZERO,
    canary_fraction: float = FRACTION,
    min_episodes: int = MIN_EPISODES,
    futility: float = FUTILITY,
    eval_episodes: int = EVAL,
    replay: Path | None = REPLAY,
    round_id: int = typer.Option(1, help="names the round's run directory (a rerun resumes it)"),
) -> None:
    """Run one improvement round now, on what the fleet has published (agents must be running)."""
    from infra.clients import use_prefect

    config = _round_config(
        steps, world_size, zero_stage, canary_fraction, min_episodes, futility, eval_episodes, replay
    )
    use_prefect(fleet := settings())  # before Prefect is imported, or it starts a server of its own
    from prefect import tags

    from flows.improvement import improvement_round

    with tags(fleet.registry.flow_run_tag):
        result = improvement_round(fleet, config, round_id)
    console.print_json(result.model_dump_json(exclude={"evaluation"}))


@loop_app.command("serve")
def serve(
    steps: int = STEPS,
    world_size: int = WORLD,
    zero_stage: int = ZERO,
    canary_fraction: float = FRACTION,
    min_episodes: int = MIN_EPISODES,
    futility: float = FUTILITY,
    eval_episodes: int = EVAL,
    replay: Path | None = REPLAY,
    min_new_successes: int = typer.Option(20, help="successful episodes since the last round that trigger one"),
    cron: str | None = typer.Option(None, help="also run on this schedule, e.g. '0 */6 * * *'"),
) -> None:
    """Serve `improvement_loop` as a Prefect deployment (visible in the Prefect UI) until Ctrl-C."""
    from infra.clients import use_prefect

    config = _round_config(
        steps, world_size, zero_stage, canary_fraction, min_episodes, futility, eval_episodes, replay
    )
    use_prefect(fleet := settings())  # before Prefect is imported, or it starts a server of its own
    from flows.improvement import improvement_loop

    console.print(f"serving improvement-loop; Prefect UI {fleet.prefect_api_url.removesuffix('/api')}")
    improvement_loop.serve(
        name="fleet-improvement",
        cron=cron,
        tags=[fleet.registry.flow_run_tag],
        parameters={"config": config, "rounds": 1, "min_new_successes": min_new_successes},
    )
