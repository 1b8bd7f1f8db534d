"""The canary analysis's view of the fleet: success per version from the telemetry topic, read
from a little before the canary started (a seek by time), never from the topic's first offset.

Kept out of the Prefect flow that uses it, so that benchmarks and tests can time and check the
same reader without importing Prefect.
"""

from __future__ import annotations

from kafka import TopicPartition

from infra.clients import kafka_consumer, seek_since
from infra.contracts.telemetry import EpisodeTelemetry, read_telemetry
from infra.offset_gaps import GaplessPoll
from infra.settings import Settings
from registry.analysis import Arm

CLOCK_SKEW_S = 60.0  # robots' clocks may run this far behind the learner's


class CanaryTelemetry:
    """A reader of the telemetry topic from the canary's start (less a minute for robots' clocks
    that run behind the learner's): not from offset 0, which a long-lived fleet has far behind.
    Each partition is read without gaps (`infra/offset_gaps.py`): on a broker that publishes a
    batch after the one behind it, an episode passed over would be an episode the analysis
    never counts."""

    def __init__(self, settings: Settings, since: float):
        self.since = since
        topic = settings.kafka.telemetry_topic
        self.consumer = kafka_consumer(settings, group_id=None)
        self.parts = [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic) or ())]
        self.consumer.assign(self.parts)
        seek_since(settings, self.consumer, self.parts, since - CLOCK_SKEW_S)
        self._polls = GaplessPoll(self.consumer, settings.kafka.offset_gap_wait())
        for tp in self.parts:
            self._polls.gaps.reset(tp, self.consumer.position(tp))

    @property
    def skipped_offsets(self) -> int:
        """Offsets given up on after the wait (a hole no record ever filled)."""
        return self._polls.gaps.skipped

    def poll(self, timeout_ms: int = 500, max_records: int = 5000) -> list:
        return self._polls.poll(timeout_ms, max_records)

    def arms(self, canary: str, champion: str) -> tuple[Arm, Arm, int]:
        """Success of each version on episodes finished since the canary started, read in one
        poll, and the count of records that are not telemetry (skipped: one bad record must not
        stop the analysis). Episodes that straddled a model swap count for neither."""
        arms, bad = {canary: Arm(0, 0), champion: Arm(0, 0)}, 0
        for record in self.poll():
            try:
                t = read_telemetry(record.value)
            except ValueError:  # pydantic's ValidationError and json's errors are ValueErrors
                bad += 1
                continue
            if not isinstance(t, EpisodeTelemetry):
                continue
            if t.at.timestamp() >= self.since and t.policy_version in arms:
                arms[t.policy_version] += Arm(int(t.success), 1, t.rejections, t.candidates)
        return arms[canary], arms[champion], bad

    def at_end(self) -> bool:
        """Whether every partition has been read to the high watermark its fetches report."""
        marks = {tp: self.consumer.highwater(tp) for tp in self.parts}
        return all(mark is not None and self.consumer.position(tp) >= mark for tp, mark in marks.items())

    def close(self) -> None:
        self.consumer.close()
