"""A version's rollout tags are MLflow's, writable by others: what cannot be read is left out or named."""

import json

from registry.model_store import PolicyVersion
from registry.rollout import STATE_TAG, history_tag_entries, rollout_state


def test_only_the_readable_entries_of_a_history_tag_are_kept():
    good = {"state": "canary", "at": "2026-12-02T13:00:00+00:00", "reason": "candidate"}
    scribbled = [good, {"state": "promoted"}, {"state": 3, "at": good["at"]}, {"at": "yesterday", "state": "x"}, "x"]
    assert history_tag_entries(json.dumps(scribbled)) == [good]


def test_an_absent_or_unreadable_history_tag_is_an_empty_history():
    assert history_tag_entries(None) == []
    assert history_tag_entries("not json") == []
    assert history_tag_entries(json.dumps({"state": "canary"})) == []


def test_a_version_no_one_may_load_shows_as_refused_whatever_its_state_tag_says():
    recorded = PolicyVersion("m", "2", "run", {"policy.json": "0" * 64}, {STATE_TAG: "canary"})
    assert rollout_state(recorded) == "canary"
    assert rollout_state(PolicyVersion("m", "3", "run", {})) == "registered"
    assert rollout_state(PolicyVersion("m", "4", "", {}, {STATE_TAG: "champion"}, refused="no digests")) == "refused"
