"""`fleet demo --profile ci`: the whole loop, tiny, on the real stack; nothing lost, the JSON complete."""

from __future__ import annotations

import pytest

from infra.clients import use_prefect

pytestmark = pytest.mark.integration


def test_the_ci_demo_runs_every_round_and_accounts_for_every_episode(tracked, tmp_path):
    settings = tracked
    use_prefect(settings)
    from flows.fleet_demo import DEMO_PROFILES, fleet_demo

    result = fleet_demo(settings, "ci", tmp_path / "demo")

    profile = DEMO_PROFILES["ci"]
    assert [r["round"] for r in result["rounds"]] == list(range(profile.rounds + 1))
    for r in result["rounds"]:
        assert r["episodes"] == profile.episodes_per_round and 0 <= r["success_rate"] <= 1
        assert r["decision"] in ("baseline", "promoted", "rolled_back", "kept", "skipped")
    assert result["episodes_published"] >= profile.episodes_per_round * len(result["rounds"])
    assert result["episodes_indexed"] == result["episodes_published"]
    assert result["lost"] == 0 and result["duplicated"] == 0

    learning = result["learning"]  # base and final champion, offline, on the same seeds
    assert learning["base_version"] == result["rounds"][0]["champion_version"]
    assert learning["final_version"] == result["rounds"][-1]["champion_version"]
    assert learning["seeds"] == 2 * profile.learning_episodes
    for arm in ("base", "final"):  # each rate is its own seeds' outcomes, seed by seed
        outcomes = learning[f"{arm}_outcomes"]
        assert len(outcomes) == learning["seeds"]
        assert learning[f"{arm}_success"] == round(sum(outcomes) / len(outcomes), 4)
    if learning["final_version"] == learning["base_version"]:
        assert learning["final_outcomes"] == learning["base_outcomes"]
    assert 0 <= learning["p_value"] <= 1
