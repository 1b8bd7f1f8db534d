"""The `fleet` command line: every command explains itself, keeps its options, and fails in one line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from cli import app

SURFACE = Path(__file__).with_name("cli_surface.json")


def command_surface() -> dict[str, list[str]]:
    """Every command's path and its options (arguments in capitals)."""
    surface = {}

    def walk(command, path: list[str]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
        else:
            surface[" ".join(path)] = sorted(
                o for p in command.params for o in (p.opts if p.param_type_name == "option" else [p.name.upper()])
            )

    walk(typer.main.get_command(app), [])
    return surface


def fleet(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=120, env=os.environ | (env or {})
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_command_keeps_its_name_and_options():
    # cli_surface.json was written from the CLI before the restructuring; since then `train posttrain`
    # and `--sample-steps` (eval, diagnose, bench policy) are new, then (issue 15) `compare`,
    # `bench data-scaling`, `eval --phrasing`, `train all --text-encoder` and `train STAGE --again`,
    # then (issue 18) `rollout public-key`, `export lerobot`, `import lerobot`, `episodes ingest` and
    # `stack robot-credentials`, `bench fleet`,
    # (issue 17) `bench media-codecs`, `bench ingest --codec --encode-ahead`, `train all --robot-frames`,
    # then (issue 15) `eval --no-grounding`, `train all --precision`, (issue 16) `bench learning
    # --fleet-share --video-fleet-share --idm-fleet-share`, `diagnose --arm-turn`, `eval --arm-turn`,
    # `bench learning --base --rounds`, `attribute --arm-turn`, (issue 17) `bench ingest
    # --encode-here` with h264 and encoding ahead as its defaults, (issue 16) `loop round|serve
    # --futility`, (issue 17) `bench ingest|fleet --keep`: a change here is a change for users.
    assert command_surface() == json.loads(SURFACE.read_text())


@pytest.mark.parametrize("path", sorted(json.loads(SURFACE.read_text())))
def test_every_command_explains_itself_with_help(path):
    result = CliRunner().invoke(app, [*path.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "--help" in result.output


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *words: str) -> None:
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == code, output
    assert "Traceback" not in output and len(output.splitlines()) == 1, output
    assert output.startswith("error:") and all(w in output for w in words), output


def test_an_unknown_profile_is_a_usage_error_in_one_line(tmp_path):
    assert_one_line_error(fleet("train", "all", "--profile", "nope", "--out", str(tmp_path)), 2, "nope", "quick")
    assert_one_line_error(fleet("demo", "--profile", "nope"), 2, "nope", "quick")


def test_an_option_out_of_range_is_a_usage_error_naming_the_setting():
    assert_one_line_error(fleet("loop", "round", "--canary-fraction", "2"), 2, "RoundConfig", "canary_fraction")
    assert_one_line_error(fleet("agents", "run", "--split", "tuesday"), 2, "FleetConfig", "split")


def test_a_directory_without_a_policy_is_a_usage_error_that_says_what_to_pass(tmp_path):
    assert_one_line_error(fleet("eval", "--policy", str(tmp_path)), 2, str(tmp_path), "fleet train all --out DIR")


def test_a_stopped_stack_is_named_in_one_line(tmp_path):
    env = {"FLEET_STACK__MLFLOW_PORT": str(free_port()), "FLEET_STACK__STATE_DIR": str(tmp_path)}
    assert_one_line_error(fleet("rollout", "status", env=env), 1, "mlflow", "did not answer", "fleet stack up")
