"""`fleet bench data-scaling`: what more robot logs buy at fixed compute.

The same training profile (the same steps, batch and seed) runs with 25, 50, 100 and 200 robot
logs, and each policy is evaluated on the same seeds. The curve says how much a round's new
episodes can be worth to the loop: steep where the policy is data-bound, flat where it is
compute-bound. Each size trains and evaluates into its own run directory, so an interrupted bench
resumes where it stopped, and the JSON and plot are written again after every size.

Stages (a) and (b), generic and human point-of-view video, never see a robot log, so they are
trained once and every count starts stage (c) from that same video prior: the counts differ only
in what the robot logs can change, and the bench costs one prior plus the robot stages per count.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from benchmarks import BenchResult
from infra.contracts.evaluation import EvaluationReport, Interval
from worldmodel.evaluate import evaluate
from worldmodel.train import POLICY_STAGES, PROFILES, VIDEO_STAGES, train_all


class ScalingPoint(BenchResult):
    robot_logs: int
    seen: float
    seen_ci95: Interval
    heldout: float
    heldout_ci95: Interval
    train_s: float


class DataScalingBench(BenchResult):
    profile: str
    episodes_per_split: int
    first_seed: int
    prior_train_s: float  # stages (a)+(b), trained once for every count
    points: list[ScalingPoint]
    complete: bool  # False while sizes are still to come
    plot: str


def bench_data_scaling(
    sizes: list[int], profile: str, episodes: int, work: Path, plot: Path, progress=None
) -> DataScalingBench:
    """`progress(partial)` is called with the result so far after each size."""
    points, first_seed = [], 0
    prior = work / "video-prior"
    robot_stages = (VIDEO_STAGES[2], *POLICY_STAGES)
    prior_report = train_all(PROFILES[profile], prior, skip_stages=robot_stages)

    def result() -> DataScalingBench:
        draw(points, plot, f"profile {profile}, {episodes} episodes per split")
        return DataScalingBench(
            profile=profile,
            episodes_per_split=episodes,
            first_seed=first_seed,
            prior_train_s=round(sum(prior_report["timings_s"].values()), 1),
            points=points,
            complete=len(points) == len(sizes),
            plot=str(plot),
        )

    for n in sizes:
        run = work / f"logs-{n}"
        state = run / "checkpoints" / "state.safetensors"
        if not state.exists():
            state.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(prior / "checkpoints" / "state.safetensors", state)
        trained = train_all(dataclasses.replace(PROFILES[profile], robot_clips=n), run)
        evaluated = run / f"evaluation-{episodes}.json"
        if evaluated.exists():
            report = EvaluationReport.model_validate_json(evaluated.read_text())
        else:
            report = evaluate(run, episodes)
            evaluated.write_text(report.model_dump_json(indent=1))
        first_seed = report.first_seed
        points.append(
            ScalingPoint(
                robot_logs=n,
                seen=report.success_rate,
                seen_ci95=report.success_ci95,
                heldout=report.heldout_success_rate,
                heldout_ci95=report.heldout_ci95,
                train_s=round(sum(trained["timings_s"].values()), 1),
            )
        )
        if progress:
            progress(result())
    return result()


def draw(points: list[ScalingPoint], path: Path, subtitle: str) -> None:
    """Success against robot logs (log scale), seen and held-out, with the 95% intervals as bands."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    x = [p.robot_logs for p in points]
    for label, rate, ci in (("seen tasks", "seen", "seen_ci95"), ("held-out tasks", "heldout", "heldout_ci95")):
        ax.plot(x, [getattr(p, rate) for p in points], marker="o", label=label)
        ax.fill_between(x, [getattr(p, ci)[0] for p in points], [getattr(p, ci)[1] for p in points], alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [str(v) for v in x])
    ax.set_ylim(0, 1)
    ax.set_xlabel("robot logs in training (fixed compute)")
    ax.set_ylabel("success rate")
    ax.set_title(f"Data scaling ({subtitle})", fontsize=10)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
