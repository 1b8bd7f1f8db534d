"""The demo's learning curve: fleet success per round with its 95% interval, and the champion
that ran each round, so a reader sees at a glance whether the loop improves the fleet. Several
arms (`fleet bench learning`: the fleet's data against a replay-only control) share one plot."""

from __future__ import annotations

from pathlib import Path

DECISION_MARKERS = {"baseline": "o", "promoted": "^", "rolled_back": "v", "kept": "s", "skipped": "x"}
COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7")  # colour-blind safe


def draw_learning_curve(arms: dict[str, list[dict]], path: Path, title: str = "Fleet success per round") -> Path:
    """`arms`: name -> the demo's rows (round, champion_version, decision, success_rate, success_ci95)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=120)
    shift = 0.08  # arms side by side, so their intervals do not hide each other
    for i, (arm, rounds) in enumerate(arms.items()):
        colour, dx = COLOURS[i % len(COLOURS)], (i - (len(arms) - 1) / 2) * shift
        x = [r["round"] + dx for r in rounds]
        rate = [r["success_rate"] for r in rounds]
        low = [r["success_rate"] - r["success_ci95"][0] for r in rounds]
        high = [r["success_ci95"][1] - r["success_rate"] for r in rounds]
        ax.errorbar(x, rate, yerr=[low, high], color=colour, capsize=4, zorder=1, label=arm if len(arms) > 1 else None)
        for xi, r in zip(x, rounds, strict=True):
            ax.scatter(xi, r["success_rate"], marker=DECISION_MARKERS.get(r["decision"], "o"), s=60, color=colour)
            ax.annotate(
                f"v{r['champion_version']}",
                (xi, r["success_ci95"][1]),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=8,
            )
    seen = {r["decision"] for rounds in arms.values() for r in rounds}
    handles = [
        plt.Line2D([], [], marker=m, linestyle="", color="grey", label=d.replace("_", " "))
        for d, m in DECISION_MARKERS.items()
        if d in seen
    ]
    legend = ax.legend(handles=handles, title="round's decision", fontsize=8, loc="upper left")
    if len(arms) > 1:
        ax.add_artist(legend)
        ax.legend(title="arm", fontsize=8, loc="upper right")
    ax.set_xticks(sorted({r["round"] for rounds in arms.values() for r in rounds}))
    ax.set_ylim(0, 1)
    ax.set_xlabel("round (label: the champion the fleet ran)")
    ax.set_ylabel("fleet success (95% interval)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
