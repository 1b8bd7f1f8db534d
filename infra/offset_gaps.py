"""Hold a partition at a missing offset until its record shows up, for brokers that publish late.

A topic without transactions or compaction has no gaps in its offsets: on Apache Kafka this guard
never acts. Tansu's object-store engine assigns a batch its offset (bumping the partition's high
watermark) before the batch's object is written, and a fetch returns the objects that exist below
the watermark. When a later batch's write finishes first, a consumer is handed offsets N-1, N+1,
moves past N, and never sees the batch that lands at N a moment later: an acknowledged episode
lost between producer and learner (it happened in CI, with the broker killed mid-stream).

So a consumer that must see everything checks each partition's offsets for a step over the next
one expected. At a gap it keeps what came before, goes back to the missing offset and looks again
until the record appears or `wait_s` has passed; a gap still open then is skipped, logged and
counted (a broker killed between assigning an offset and writing its batch leaves a hole that
nothing fills: the producer never had an acknowledgement and sent the batch again elsewhere).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)


class OffsetGaps:
    def __init__(self, wait_s: float, clock: Callable[[], float] = time.monotonic):
        self.wait_s = wait_s
        self.clock = clock
        self.waited = 0  # gaps a partition was held at, over every partition
        self.skipped = 0  # offsets given up on, over every partition
        self._next: dict[Any, int | None] = {}  # partition -> the offset expected next (None: unknown)
        self._open: dict[Any, tuple[int, float]] = {}  # partition -> (missing offset, when first seen)

    def reset(self, partition: Any, next_offset: int | None) -> None:
        """The consumer now reads `partition` from `next_offset` (None: from wherever it starts)."""
        self._next[partition] = next_offset
        self._open.pop(partition, None)

    def admit(
        self,
        partition: Any,
        records: Sequence[Any],
        committed: Callable[[], int | None] = lambda: None,
    ) -> tuple[list[Any], int | None]:
        """The records to keep, in order, and the offset to go back to if the partition must wait
        for a missing one (else None). `committed` gives where the group stands on a partition
        whose expected offset is unknown (just assigned)."""
        if self.wait_s <= 0:
            return list(records), None
        if self._next.get(partition) is None:
            self._next[partition] = committed()
        expected = self._next[partition]
        kept = []
        for record in records:
            if expected is not None and record.offset > expected and not self._give_up(partition, expected, record):
                self._next[partition] = expected
                return kept, expected
            kept.append(record)
            expected = record.offset + 1
        self._next[partition] = expected
        self._open.pop(partition, None)
        return kept, None

    def _give_up(self, partition: Any, missing: int, after: Any) -> bool:
        now = self.clock()
        at, since = self._open.get(partition, (None, now))
        if at != missing:
            self._open[partition] = (missing, since := now)
            self.waited += 1
        if now - since >= self.wait_s:
            log.warning(
                "%s: offsets %d..%d never appeared in %.1f s; reading on from %d",
                partition,
                missing,
                after.offset - 1,
                now - since,
                after.offset,
            )
            self.skipped += after.offset - missing
            del self._open[partition]
            return True
        return False


class GaplessPoll:
    """A consumer's poll with each partition cut at a gap in its offsets: a partition that must wait
    is sent back to the missing offset and paused for `recheck_s`, then fetched again, until
    `OffsetGaps` sees the record or gives up on it. What it returns is in partition order."""

    def __init__(self, consumer: Any, wait_s: float, recheck_s: float = 0.25):
        self.consumer = consumer
        self.gaps = OffsetGaps(wait_s)
        self.recheck_s = recheck_s
        self._held: dict[Any, float] = {}  # partitions paused at a missing offset -> when to fetch again

    def poll(
        self, timeout_ms: int, max_records: int, committed: Callable[[Any], int | None] = lambda tp: None
    ) -> list[Any]:
        """The records to keep; `committed(tp)` says where a just-assigned partition's reading starts."""
        self._resume_held()
        batches = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        records = []
        for tp in sorted(batches, key=lambda t: t.partition):
            kept, missing = self.gaps.admit(tp, batches[tp], lambda tp=tp: committed(tp))
            records += kept
            if missing is not None:
                self.consumer.seek(tp, missing)
                self.consumer.pause(tp)
                self._held[tp] = self.gaps.clock() + self.recheck_s
        return records

    def _resume_held(self) -> None:
        now, assigned = self.gaps.clock(), self.consumer.assignment()
        due = [tp for tp, at in self._held.items() if at <= now or tp not in assigned]
        for tp in due:
            del self._held[tp]
        if due := [tp for tp in due if tp in assigned]:
            self.consumer.resume(*due)
