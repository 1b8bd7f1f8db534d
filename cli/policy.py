"""`fleet eval` and `fleet diagnose`: how well a policy does, and which of its parts fails."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cli.app import app, console, progress, report, settings, write_json
from infra.errors import UsageError

SAMPLE_STEPS = typer.Option(None, help="sampler steps when imagining (unset: the policy's own); fewer is faster")
ARM_TURN = typer.Option(
    0.0, min=-180, max=180, help="the robot's arm mounting, in degrees from the arm that recorded the robot logs"
)


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
    no_grounding: bool = typer.Option(
        False,
        "--no-grounding",
        help="ablation: words the policy never trained on reach it as <unk> instead of the instruction "
        "being read as the closest task instruction",
    ),
    sample_steps: int | None = SAMPLE_STEPS,
    workers: int | None = typer.Option(
        None,
        min=1,
        help="evaluating processes, one thread each (unset: one per core, at most 8); the outcomes do not change",
    ),
    phrasing: str = typer.Option(
        "simulator",
        help="simulator: the tasks' own instructions; operator: the same tasks in words training never used",
    ),
    arm_turn: float = ARM_TURN,
) -> None:
    """Success on seen and held-out tasks against a random policy on the same seeds."""
    from registry.model_store import resolve_policy
    from sim.tabletop import TabletopConfig
    from worldmodel.evaluate import evaluate
    from worldmodel.planner import PlannerConfig

    if phrasing not in ("simulator", "operator"):
        raise UsageError(f"unknown phrasing {phrasing!r}", hint="simulator or operator")
    config = PlannerConfig(
        use_rejection=not no_rejection, use_critic=not no_critic, ground_instructions=not no_grounding
    )
    found = resolve_policy(settings(), policy)  # a wrong path is an error before any progress bar
    with progress() as bars:
        bar = bars.add_task("episodes", total=2 * episodes)
        result = evaluate(
            found,
            episodes,
            planner_config=config,
            progress=lambda: bars.advance(bar),
            phrasing=phrasing,
            workers=workers,
            sample_steps=sample_steps,
            env=TabletopConfig(arm_turn_deg=arm_turn),
        )
    report(result, out, keys=tuple(k for k in type(result).model_fields if k != "outcomes"))


@app.command("compare")
def compare(
    a: Path = typer.Argument(..., help="the JSON of one `fleet eval` run"),
    b: Path = typer.Argument(..., help="the JSON of another, on the same seeds"),
    out: Path = typer.Option(Path("out/compare.json"), help="where to write the JSON result"),
) -> None:
    """Whether two policies (or a policy and its ablation) differ, on the seeds both ran: exact McNemar."""
    from infra.contracts.evaluation import EvaluationReport
    from worldmodel.evaluate import compare

    result = compare(*(EvaluationReport.model_validate_json(p.read_text()) for p in (a, b)), names=(str(a), str(b)))
    table = Table("split", "episodes", "A wins", "B wins", "only A", "only B", "p (McNemar)")
    for split, t in result.splits.items():
        table.add_row(
            split, *(str(v) for v in (t.episodes, t.a_successes, t.b_successes, t.a_only, t.b_only, t.p_value))
        )
    console.print(table)
    write_json(result, out)


@app.command("diagnose")
def diagnose(
    policy: Path = typer.Option(..., help="a policy directory, or the run directory of `fleet train all`"),
    episodes: int = typer.Option(10, help="seeded expert episodes per question"),
    out: Path = typer.Option(Path("out/diagnose.json"), help="where to write the JSON result"),
    sample_steps: int | None = SAMPLE_STEPS,
    arm_turn: float = ARM_TURN,
) -> None:
    """Which part of a policy fails: the IDM on real frames, on real futures, or the imagined futures.
    `--arm-turn` sets the arm the IDM's reading of real frames is measured on."""
    from worldmodel.diagnose import diagnose
    from worldmodel.policy import WorldModelPolicy

    loaded = WorldModelPolicy.load(policy).with_sample_steps(sample_steps)
    with console.status("diagnosing"):
        result = diagnose(loaded, episodes, arm_turn_deg=arm_turn)
    report(result, out)


@app.command("attribute")
def attribute(
    base: str = typer.Option(..., help="the policy before fine-tuning: a directory or a registry URI (models:/NAME/V)"),
    tuned: str = typer.Option(..., help="the fine-tuned policy: a directory or a registry URI"),
    episodes: int = typer.Option(100, help="seeded episodes per split, the same for all five policies"),
    candidates: int = typer.Option(4, help="K, as the fleet ran it (the demo's robots run 4)"),
    work: Path = typer.Option(Path(".fleet/attribute"), help="where the hybrid policies are written"),
    out: Path = typer.Option(Path("out/attribute.json"), help="where to write the JSON result"),
    arm_turn: float = ARM_TURN,
) -> None:
    """Which fine-tuned part moved success: the base with each of the generator, IDM and critic
    swapped in alone, against the base on the same seeds (exact McNemar)."""
    from registry.model_store import resolve_policy
    from sim.tabletop import TabletopConfig
    from worldmodel.attribution import FINE_TUNED, attribute
    from worldmodel.planner import PlannerConfig

    paths = [resolve_policy(settings(), p) for p in (base, tuned)]
    with progress() as bars:
        bar = bars.add_task("episodes", total=2 * episodes * (2 + len(FINE_TUNED)))
        result = attribute(
            *paths,
            episodes,
            work,
            PlannerConfig(candidates=candidates),
            progress=lambda: bars.advance(bar),
            env=TabletopConfig(arm_turn_deg=arm_turn),
        )
    table = Table("policy", "success", "95% CI", "only it", "only base", "p (McNemar)")
    table.add_row("base", f"{result.base_success_rate:.0%}", str(list(result.base_ci95)), "", "", "")
    for name, e in result.effects.items():
        label = name if name == "tuned" else f"base + tuned {name}"
        t = e.against_base
        table.add_row(label, f"{e.success_rate:.0%}", str(list(e.ci95)), str(t.a_only), str(t.b_only), str(t.p_value))
    console.print(table)
    write_json(result, out)
