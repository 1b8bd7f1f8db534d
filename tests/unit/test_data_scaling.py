"""`fleet bench data-scaling` at toy scale: one trained and evaluated policy per log count, a plot."""

import json

from typer.testing import CliRunner

from cli import app


def test_the_data_scaling_bench_trains_each_count_and_draws_the_curve(tmp_path):
    out, plot = tmp_path / "scaling.json", tmp_path / "scaling.png"
    args = ["bench", "data-scaling", "--logs", "4", "--logs", "8", "--profile", "ci", "--episodes", "1"]
    args += ["--work", str(tmp_path / "runs"), "--plot", str(plot), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    found = json.loads(out.read_text())
    assert [p["robot_logs"] for p in found["points"]] == [4, 8]
    assert all(0 <= p["seen"] <= 1 and p["seen_ci95"][0] <= p["seen"] <= p["seen_ci95"][1] for p in found["points"])
    assert plot.read_bytes().startswith(b"\x89PNG")
    # each count trained with its own logs, at the same steps
    reports = [json.loads((tmp_path / "runs" / f"logs-{n}" / "train_report.json").read_text()) for n in (4, 8)]
    assert [r["profile"]["robot_clips"] for r in reports] == [4, 8]
    assert reports[0]["profile"]["posttrain_steps"] == reports[1]["profile"]["posttrain_steps"]
    # stages (a)+(b) see no robot log: trained once, and every count starts stage (c) from them
    for report in reports:
        assert "pretrain_s" not in report["timings_s"] and "posttrain_s" in report["timings_s"]
    assert found["prior_train_s"] > 0 and found["complete"]
    # each count's evaluation is kept, so a stopped bench resumes without redoing it
    assert all((tmp_path / "runs" / f"logs-{n}" / "evaluation-1.json").exists() for n in (4, 8))
