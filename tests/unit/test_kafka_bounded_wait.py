"""A caller of a Kafka client never waits forever on kafka-python's network thread."""

from __future__ import annotations

import threading
import time

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.net.selector import NetworkSelector

from infra import kafka_bounded_wait


@pytest.fixture
def idle_network_thread():
    assert kafka_bounded_wait.install(), "the pinned kafka-python is the one the bound was written against"
    net = NetworkSelector()
    net.start()
    time.sleep(0.2)  # its IO thread is now in select() with nothing scheduled: no timeout at all
    yield net
    net.stop(timeout_ms=2000)


def _outcome_within(seconds: float, call) -> dict:
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = call()
        except Exception as exc:
            outcome["error"] = exc

    caller = threading.Thread(target=target, daemon=True)
    caller.start()
    caller.join(seconds)
    return outcome if not caller.is_alive() else {"stranded": True}


def test_work_queued_without_a_wake_up_still_runs(idle_network_thread, monkeypatch):
    # the failure we saw: work queued behind an IO thread that nothing wakes
    monkeypatch.setattr(idle_network_thread, "call_soon_threadsafe", idle_network_thread.call_soon)
    assert _outcome_within(5, lambda: idle_network_thread.run(lambda: 42)) == {"value": 42}


def test_a_network_thread_that_never_answers_is_a_timeout_error(idle_network_thread, monkeypatch):
    monkeypatch.setattr(kafka_bounded_wait, "CEILING_S", 1.5)
    monkeypatch.setattr(idle_network_thread, "call_soon_threadsafe", lambda callback: None)  # work lost
    started = time.monotonic()
    outcome = _outcome_within(10, lambda: idle_network_thread.run(lambda: 42))
    assert isinstance(outcome.get("error"), KafkaTimeoutError), outcome
    assert time.monotonic() - started < 5
