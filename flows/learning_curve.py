"""The demo's learning curve: fleet success per round with its 95% interval, and the champion
that ran each round, so a reader sees at a glance whether the loop improves the fleet."""

from __future__ import annotations

from pathlib import Path

DECISION_MARKERS = {"baseline": "o", "promoted": "^", "rolled_back": "v", "kept": "s", "skipped": "x"}


def draw_learning_curve(rounds: list[dict], path: Path, title: str = "Fleet success per round") -> Path:
    """`rounds`: the demo's rows (round, champion_version, decision, success_rate, success_ci95)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=120)
    x = [r["round"] for r in rounds]
    rate = [r["success_rate"] for r in rounds]
    low = [r["success_rate"] - r["success_ci95"][0] for r in rounds]
    high = [r["success_ci95"][1] - r["success_rate"] for r in rounds]
    ax.errorbar(x, rate, yerr=[low, high], color="#0072b2", capsize=4, zorder=1)
    for r in rounds:
        marker = DECISION_MARKERS.get(r["decision"], "o")
        ax.scatter(r["round"], r["success_rate"], marker=marker, s=60, color="#0072b2", zorder=2)
        ax.annotate(
            f"v{r['champion_version']}",
            (r["round"], r["success_ci95"][1]),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    handles = [
        plt.Line2D([], [], marker=m, linestyle="", color="#0072b2", label=d.replace("_", " "))
        for d, m in DECISION_MARKERS.items()
        if any(r["decision"] == d for r in rounds)
    ]
    ax.legend(handles=handles, title="round's decision", fontsize=8, loc="upper left")
    ax.set_xticks(x)
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
