"""A bound on kafka-python 3.0's one unbounded wait.

kafka-python 3.0 runs all network IO on a background thread. A caller (poll, commit, iteration)
hands a coroutine to that thread and blocks on a `threading.Event` with no timeout
(`NetworkSelector.run`), so if the IO thread never finishes the coroutine, the caller never
returns: dpkp/kafka-python#3121, fixed after 3.0.12 by #3123, which raises KafkaTimeoutError on
the caller's side instead. We saw it in CI: a telemetry consumer's iteration blocked for 15 min
while its IO thread sat idle in select().

`install()` replaces that one wait with one that nudges the IO thread's select() every second
(a lost wake-up leaves queued work behind an idle select) and, after `CEILING_S`, gives up with
KafkaTimeoutError: an error every caller of a Kafka client already handles, instead of a thread
that never comes back. It changes nothing else, and nothing on a kafka-python it was not written
against.
"""

from __future__ import annotations

import threading
import time

import kafka
from kafka.errors import KafkaTimeoutError
from kafka.net.selector import NetworkSelector

# Longer than any single call the platform makes (a consumer group join on Tansu takes ~23 s,
# polls ask for at most seconds), shorter than anything that looks alive to an operator.
CEILING_S = 300.0
NUDGE_S = 1.0

_original_run = NetworkSelector.run


def _bounded_run(self: NetworkSelector, coro, *args):
    if self._io_thread is None or threading.current_thread() is self._io_thread or self._closed or self._exception:
        return _original_run(self, coro, *args)  # these paths do not wait on the IO thread
    event = threading.Event()
    state = {"value": None, "exception": None}

    async def waiter():  # as kafka-python's own: the IO thread runs it and sets the event
        try:
            state["value"] = await self._invoke(coro, *args)
        except BaseException as exc:
            if state["exception"] is None:  # a failed waiter's exception is set first; keep it
                state["exception"] = exc
        finally:
            with self._pending_waiters_lock:
                self._pending_waiters.pop(event, None)
            event.set()

    with self._pending_waiters_lock:
        self._pending_waiters[event] = state
    self.call_soon_threadsafe(waiter)
    deadline = time.monotonic() + CEILING_S
    while not event.wait(NUDGE_S):
        if time.monotonic() >= deadline:
            with self._pending_waiters_lock:
                self._pending_waiters.pop(event, None)
            raise KafkaTimeoutError(f"kafka-python's network thread did not answer in {CEILING_S:.0f} s")
        self.wakeup()
    if state["exception"] is not None:
        raise state["exception"]
    return state["value"]


def install() -> bool:
    """Bound the wait on the kafka-python this was written against (3.0.x); True if installed."""
    written_against = all(hasattr(NetworkSelector, name) for name in ("_invoke", "_fail_pending_waiters", "wakeup"))
    if not kafka.__version__.startswith("3.0.") or not written_against:
        return False
    NetworkSelector.run = _bounded_run
    return True
