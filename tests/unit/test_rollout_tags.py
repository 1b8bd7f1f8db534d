"""A version's rollout-history tag is MLflow's, writable by others: what cannot be read is left out."""

import json

from registry.rollout import history_tag_entries


def test_only_the_readable_entries_of_a_history_tag_are_kept():
    good = {"state": "canary", "at": "2026-12-02T13:00:00+00:00", "reason": "candidate"}
    scribbled = [good, {"state": "promoted"}, {"state": 3, "at": good["at"]}, {"at": "yesterday", "state": "x"}, "x"]
    assert history_tag_entries(json.dumps(scribbled)) == [good]


def test_an_absent_or_unreadable_history_tag_is_an_empty_history():
    assert history_tag_entries(None) == []
    assert history_tag_entries("not json") == []
    assert history_tag_entries(json.dumps({"state": "canary"})) == []
