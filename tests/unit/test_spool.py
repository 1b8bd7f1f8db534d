import threading
import time

import pytest

from fleet_agent.spool import Spool, SpoolBusy, SpoolFull


def message(n: int) -> bytes:
    return f'{{"robot_id": "r", "n": {n}, "media": {{"key": "k{n}"}}}}'.encode()


def test_entries_come_back_in_order_after_a_restart(tmp_path):
    spool = Spool(tmp_path)
    for i in range(5):
        spool.append(message(i), bytes([i]))
    spool.close()
    reopened = Spool(tmp_path)
    entries = reopened.peek(10)
    assert [e.message() for e in entries] == [message(i) for i in range(5)]
    assert [e.media() for e in entries] == [bytes([i]) for i in range(5)]
    assert entries[2].media_key() == "k2" and entries[2].robot_id() == "r"
    reopened.remove(entries[0])
    reopened.append(message(5), b"")
    reopened.close()
    assert [e.seq for e in Spool(tmp_path).peek(10)] == [1, 2, 3, 4, 5]


def test_a_half_written_entry_is_discarded(tmp_path):
    first = Spool(tmp_path)
    first.append(message(0), b"media")
    first.close()
    (tmp_path / "000000000001.media").write_bytes(b"media whose message never landed")
    (tmp_path / "000000000002.json.tmp").write_bytes(b"{")
    spool = Spool(tmp_path)
    assert len(spool) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "000000000000.json", "000000000000.media"]
    assert spool.append(message(1), b"m").seq == 1


def test_a_second_process_cannot_open_a_spool_in_use(tmp_path):
    spool = Spool(tmp_path)
    with pytest.raises(SpoolBusy, match="in use"):
        Spool(tmp_path)
    spool.close()
    Spool(tmp_path).close()  # free again once the first lets go


def test_a_full_spool_waits_for_room_then_refuses(tmp_path):
    spool = Spool(tmp_path, max_bytes=100, wait_s=0.2)
    first = spool.append(message(0), b"x" * 50)
    with pytest.raises(SpoolFull, match="cap of 100"):
        spool.append(message(1), b"y" * 50)
    assert len(spool) == 1 and spool.nbytes == first.nbytes()  # the refused episode left nothing behind
    # the shipper removing an entry lets a waiting robot go on
    spool.wait_s = 5
    threading.Timer(0.2, spool.remove, [first]).start()
    started = time.monotonic()
    spool.append(message(1), b"y" * 50)
    assert 0.1 < time.monotonic() - started < 4 and len(spool) == 1


def test_an_entry_that_can_never_ship_is_quarantined_with_its_reason(tmp_path):
    spool = Spool(tmp_path)
    entries = [spool.append(message(i), b"m") for i in range(3)]
    spool.quarantine(entries[0], "unreadable spool entry")
    assert [e.seq for e in spool.peek(10)] == [1, 2] and spool.quarantined() == ["unreadable spool entry"]
    assert sorted(p.name for p in (tmp_path / "quarantine").iterdir()) == [
        "000000000000.json",
        "000000000000.media",
        "000000000000.reason",
    ]
    spool.close()
    assert len(Spool(tmp_path)) == 2  # a restart keeps the quarantine out of the stream


def disk_full_for(spool_dir, seq: int, suffix: str) -> None:
    """The kernel's own ENOSPC for one file of one entry: it is written through a link to /dev/full."""
    (spool_dir / f"{seq:012d}{suffix}.tmp").symlink_to("/dev/full")


@pytest.mark.parametrize("suffix", [".media", ".json"])
def test_a_full_disk_refuses_the_episode_and_leaves_the_spool_as_it_was(tmp_path, suffix):
    spool = Spool(tmp_path)
    kept = spool.append(message(0), b"m0")
    disk_full_for(tmp_path, 1, suffix)
    with pytest.raises(SpoolFull, match="disk under spool .* is full"):
        spool.append(message(1), b"m1")
    assert [e.message() for e in spool.peek(10)] == [message(0)] and spool.nbytes == kept.nbytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "000000000000.json", "000000000000.media"]
    assert spool.append(message(2), b"m2").seq == 2  # the disk has room again: the next episode is kept


def test_a_long_backlog_ships_without_listing_the_spool_again(tmp_path, monkeypatch):
    # A robot back from an outage may hold ~190,000 entries: listing them for each batch of 64
    # cost 31 ms at 20,000 entries, so the order is read once, when the spool opens.
    first = Spool(tmp_path)
    for i in range(300):
        first.append(message(i), b"m")
    first.close()
    spool = Spool(tmp_path)
    listings = []
    monkeypatch.setattr("fleet_agent.spool.os.listdir", lambda path: listings.append(path) or [])
    shipped = []
    while batch := spool.peek(64):
        assert len(spool) == 300 - len(shipped)
        for entry in batch:
            shipped.append(entry.seq)
            spool.remove(entry)
    assert shipped == list(range(300)) and len(spool) == 0 and listings == []


def test_entries_set_aside_out_of_order_leave_the_rest_in_order(tmp_path):
    spool = Spool(tmp_path)
    entries = [spool.append(message(i), b"m") for i in range(6)]
    spool.quarantine(entries[2], "refused by the broker")
    spool.quarantine(entries[4], "refused by the broker")
    assert [e.seq for e in spool.peek(3)] == [0, 1, 3] and len(spool) == 4
    for entry in spool.peek(2):
        spool.remove(entry)
    spool.append(message(6), b"m")
    assert [e.seq for e in spool.peek(10)] == [3, 5, 6] and len(spool) == 3


def test_an_entry_whose_files_vanished_is_set_aside_not_retried_forever(tmp_path):
    spool = Spool(tmp_path)
    gone, kept = spool.append(message(0), b"m"), spool.append(message(1), b"m")
    gone.path(".json").unlink()  # an operator freeing disk by hand
    assert [e.seq for e in spool.peek(10)] == [0, 1]
    spool.quarantine(gone, "unreadable spool entry: FileNotFoundError")
    assert [e.seq for e in spool.peek(10)] == [kept.seq] and spool.quarantined() == [
        "unreadable spool entry: FileNotFoundError"
    ]
