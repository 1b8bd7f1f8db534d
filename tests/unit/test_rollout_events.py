from collections import namedtuple

from fleet_agent.models import rollout_events
from infra.contracts.rollout import RolloutEvent, RolloutState

Record = namedtuple("Record", "topic partition offset value")


def event(model: str, version: str) -> bytes:
    return (
        RolloutEvent(model=model, version=version, state=RolloutState.champion, aliases={"champion": version})
        .model_dump_json()
        .encode()
    )


def test_a_record_that_is_not_an_event_does_not_hide_the_good_events_polled_with_it():
    # Before, one bad record failed the whole poll: its good neighbours waited for the registry poll.
    polled = [
        Record("fleet.rollouts", 0, 7, b"{not json"),
        Record("fleet.rollouts", 0, 8, None),  # a tombstone
        Record("fleet.rollouts", 0, 9, event("worldfleet-policy", "3")),
        Record("fleet.rollouts", 0, 10, b'{"model": "worldfleet-policy"}'),
        Record("fleet.rollouts", 0, 11, event("another-model", "9")),
    ]
    assert [e.version for e in rollout_events("worldfleet-policy", polled)] == ["3"]
