import threading
import time

import pytest

from fleet_agent.fleet import Fleet, FleetStopped


def a_fleet_whose_loop_fails(error: Exception) -> Fleet:
    fleet = Fleet.__new__(Fleet)  # no robots or services: only the background loop is under test
    fleet.failure, fleet.finished = None, []

    def run(stop):
        raise error

    fleet.run = run
    return fleet


def test_a_fleet_that_stops_on_an_error_is_reported_where_the_demo_waits_for_its_episodes():
    # Before, the demo waited out its 30-minute timeout for episodes a dead thread would never make.
    # Imported here: Prefect reads its API URL once, when first imported, and collection must not
    # be that moment for the integration tests that point it at their own server.
    from flows.fleet_demo import _champion_success

    fleet = a_fleet_whose_loop_fails(PermissionError(13, "Permission denied", "/robot/spool/000000000007.media.tmp"))
    fleet.run_in_background(threading.Event()).join(5)
    started = time.monotonic()
    with pytest.raises(FleetStopped, match="PermissionError: .* Permission denied: '/robot/spool/"):
        _champion_success(fleet, "1", since=0.0, n=5, timeout_s=3)
    assert time.monotonic() - started < 1
