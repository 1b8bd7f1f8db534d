"""`fleet eval` and `fleet diagnose`: how well a policy does, and which of its parts fails."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.app import app, console, progress, report, settings

SAMPLE_STEPS = typer.Option(None, help="sampler steps when imagining (unset: the policy's own); fewer is faster")


@app.command("eval")
def evaluate(
    policy: str = typer.Option(
        ...,
        help="a policy directory (or the run directory of `fleet train all`), or a registry URI: "
        "models:/NAME/VERSION or models:/NAME@ALIAS",
    ),
    episodes: int = typer.Option(20, help="seeded episodes per split (seen, held-out)"),
    out: Path = typer.Option(Path("out/eval.json"), help="where to write the JSON result"),
    no_rejection: bool = typer.Option(
        False, "--no-rejection", help="ablation: execute candidates the planner would reject"
    ),
    no_critic: bool = typer.Option(False, "--no-critic", help="ablation: take the first candidate, not the best of K"),
    sample_steps: int | None = SAMPLE_STEPS,
) -> None:
    """Success on seen and held-out tasks against a random policy on the same seeds."""
    from registry.model_store import resolve_policy
    from worldmodel.evaluate import evaluate
    from worldmodel.planner import PlannerConfig
    from worldmodel.policy import WorldModelPolicy

    config = PlannerConfig(use_rejection=not no_rejection, use_critic=not no_critic)
    loaded = WorldModelPolicy.load(resolve_policy(settings(), policy)).with_sample_steps(sample_steps)
    with progress() as bars:
        bar = bars.add_task("episodes", total=2 * episodes)
        result = evaluate(loaded, episodes, planner_config=config, progress=lambda: bars.advance(bar))
    report(result, out)


@app.command("diagnose")
def diagnose(
    policy: Path = typer.Option(..., help="a policy directory, or the run directory of `fleet train all`"),
    episodes: int = typer.Option(10, help="seeded expert episodes per question"),
    out: Path = typer.Option(Path("out/diagnose.json"), help="where to write the JSON result"),
    sample_steps: int | None = SAMPLE_STEPS,
) -> None:
    """Which part of a policy fails: the IDM on real frames, on real futures, or the imagined futures."""
    from worldmodel.diagnose import diagnose
    from worldmodel.policy import WorldModelPolicy

    loaded = WorldModelPolicy.load(policy).with_sample_steps(sample_steps)
    with console.status("diagnosing"):
        result = diagnose(loaded, episodes)
    report(result, out)
