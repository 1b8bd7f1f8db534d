"""A consumer held at a missing offset: what it keeps, where it goes back to, when it gives up."""

from __future__ import annotations

from collections import namedtuple

from infra.offset_gaps import OffsetGaps

Record = namedtuple("Record", "offset")


def at(*offsets):
    return [Record(o) for o in offsets]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_gapless_offsets_pass_through():
    gaps = OffsetGaps(wait_s=10)
    assert gaps.admit("p0", at(0, 1, 2)) == (at(0, 1, 2), None)
    assert gaps.admit("p0", at(3, 4)) == (at(3, 4), None)
    assert gaps.skipped == 0


def test_a_gap_keeps_what_came_before_and_goes_back_to_the_missing_offset():
    gaps = OffsetGaps(wait_s=10)
    assert gaps.admit("p0", at(0, 1, 3, 4)) == (at(0, 1), 2)
    # fetched again from 2: still missing, so still waiting
    assert gaps.admit("p0", at(3, 4)) == ([], 2)
    # the late batch appears
    assert gaps.admit("p0", at(2, 3, 4)) == (at(2, 3, 4), None)
    assert (gaps.waited, gaps.skipped) == (1, 0)  # one gap waited at, once however often fetched


def test_a_gap_between_two_polls_is_caught_too():
    gaps = OffsetGaps(wait_s=10)
    gaps.admit("p0", at(0, 1))
    assert gaps.admit("p0", at(3)) == ([], 2)


def test_a_gap_still_open_after_the_wait_is_skipped_and_counted():
    clock = Clock()
    gaps = OffsetGaps(wait_s=10, clock=clock)
    assert gaps.admit("p0", at(0, 3)) == (at(0), 1)
    clock.now = 9.9
    assert gaps.admit("p0", at(3)) == ([], 1)
    clock.now = 10.0
    assert gaps.admit("p0", at(3, 4)) == (at(3, 4), None)
    assert gaps.skipped == 2
    # a later gap gets its own full wait
    assert gaps.admit("p0", at(6)) == ([], 5)


def test_partitions_are_independent():
    gaps = OffsetGaps(wait_s=10)
    assert gaps.admit("p0", at(0, 2)) == (at(0), 1)
    assert gaps.admit("p1", at(0, 1)) == (at(0, 1), None)


def test_a_partition_just_assigned_starts_from_the_groups_committed_offset():
    gaps = OffsetGaps(wait_s=10)
    gaps.admit("p0", at(0, 1))
    gaps.reset("p0", None)  # reassigned: another learner may have read on meanwhile
    assert gaps.admit("p0", at(40, 41), committed=lambda: 40) == (at(40, 41), None)
    gaps.reset("p0", None)
    assert gaps.admit("p0", at(43), committed=lambda: 42) == ([], 42)


def test_a_replay_from_an_earlier_offset_is_not_a_gap():
    gaps = OffsetGaps(wait_s=10)
    gaps.admit("p0", at(0, 1, 2, 3))
    assert gaps.admit("p0", at(1, 2, 3, 4)) == (at(1, 2, 3, 4), None)


def test_no_wait_means_no_check():
    gaps = OffsetGaps(wait_s=0)
    assert gaps.admit("p0", at(0, 5, 9)) == (at(0, 5, 9), None)
