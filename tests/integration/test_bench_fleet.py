"""`fleet bench fleet` on a small fleet: it counts what the robots sent and times every part."""

from __future__ import annotations

import pytest

from benchmarks.fleet_scale import bench_fleet
from dashboard.app import TABS

pytestmark = pytest.mark.integration


def test_the_fleet_bench_indexes_what_its_robots_sent_and_times_every_part(services, bench_leftovers):
    before = bench_leftovers()
    result = bench_fleet(
        services, robots=30, duration_s=8, episode_s=3, learners=2, dashboard_episodes=500, dashboard_repeats=1
    )
    assert bench_leftovers() == before, "its topics and media are removed when it ends"
    assert result.episodes_published == 80  # 30 robots, one episode each per 3 s, for 8 s
    assert (result.episodes_indexed, result.lost, result.duplicated) == (80, 0, 0)
    assert result.telemetry_records >= 80 + 30  # an announcement per episode, a heartbeat per robot
    # the canary started 6 s in and reads from a minute before it: here, the whole topic, to its end
    assert result.canary_records_read == result.telemetry_records
    assert 0 < result.round_episodes < result.episodes_published  # the second half only
    assert 0 < result.learner_lag_s_p50 <= result.learner_lag_s_p95
    assert result.dashboard_episodes == 500 and set(result.dashboard_view_s) == set(TABS)
