from fleet_agent.spool import Spool


def message(n: int) -> bytes:
    return f'{{"robot_id": "r", "n": {n}, "media": {{"key": "k{n}"}}}}'.encode()


def test_entries_come_back_in_order_after_a_restart(tmp_path):
    spool = Spool(tmp_path)
    for i in range(5):
        spool.append(message(i), bytes([i]))
    reopened = Spool(tmp_path)
    entries = reopened.peek(10)
    assert [e.message() for e in entries] == [message(i) for i in range(5)]
    assert [e.media() for e in entries] == [bytes([i]) for i in range(5)]
    assert entries[2].media_key() == "k2" and entries[2].robot_id() == "r"
    reopened.remove(entries[0])
    reopened.append(message(5), b"")
    assert [e.seq for e in Spool(tmp_path).peek(10)] == [1, 2, 3, 4, 5]


def test_a_half_written_entry_is_discarded(tmp_path):
    Spool(tmp_path).append(message(0), b"media")
    (tmp_path / "000000000001.media").write_bytes(b"media whose message never landed")
    (tmp_path / "000000000002.json.tmp").write_bytes(b"{")
    spool = Spool(tmp_path)
    assert len(spool) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000000000000.json", "000000000000.media"]
    assert spool.append(message(1), b"m").seq == 1
