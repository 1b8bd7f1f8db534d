"""Which robots run the canary: about the configured share of the fleet, however it is split
among processes, stable, and the same in every process."""

from fleet_agent.models import canary_robots

FLEET = [f"robot-{i:04d}" for i in range(2000)]


def test_about_the_configured_share_of_the_fleet_runs_the_canary():
    for fraction in (0.05, 0.25, 0.5):
        share = len(canary_robots(FLEET, "7", fraction)) / len(FLEET)
        assert abs(share - fraction) < 0.03, (fraction, share)
    assert canary_robots(FLEET, "7", 0.0) == set()


def test_one_robot_per_process_covers_the_fraction_not_the_whole_fleet():
    # each agent process decides for its own robots only
    chosen = [r for r in FLEET if canary_robots([r], "7", 0.25)]
    assert abs(len(chosen) / len(FLEET) - 0.25) < 0.03
    assert set(chosen) == canary_robots(FLEET, "7", 0.25)  # the same robots as one process deciding for all


def test_the_choice_is_stable_and_independent_of_order_but_changes_with_the_version():
    chosen = canary_robots(FLEET, "7", 0.25)
    assert canary_robots(list(reversed(FLEET)), "7", 0.25) == chosen
    assert canary_robots(FLEET, "8", 0.25) != chosen  # no robot is always the guinea pig
