"""Which robots run the canary: the configured share, stable, and the same in every process."""

from fleet_agent.models import canary_robots


def test_the_configured_share_of_robots_runs_the_canary():
    robots = [f"robot-{i:03d}" for i in range(20)]
    assert len(canary_robots(robots, "7", 0.25)) == 5
    assert len(canary_robots(robots, "7", 0.01)) == 1  # at least one robot tries a canary
    assert canary_robots(robots, "7", 0.0) == set()


def test_the_choice_is_stable_and_independent_of_order_but_changes_with_the_version():
    robots = [f"robot-{i:03d}" for i in range(20)]
    chosen = canary_robots(robots, "7", 0.25)
    assert canary_robots(list(reversed(robots)), "7", 0.25) == chosen
    assert canary_robots(robots, "8", 0.25) != chosen  # no robot is always the guinea pig
