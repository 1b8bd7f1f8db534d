from fleet_agent.spool import Spool


def test_entries_come_back_in_order_after_a_restart(tmp_path):
    spool = Spool(tmp_path)
    for i in range(5):
        spool.append(f'{{"robot_id": "r", "n": {i}}}'.encode(), {"a.bin": bytes([i])})
    reopened = Spool(tmp_path)
    assert [e.message() for e in reopened.peek(10)] == [f'{{"robot_id": "r", "n": {i}}}'.encode() for i in range(5)]
    reopened.remove(reopened.peek(1)[0])
    reopened.append(b'{"robot_id": "r", "n": 5}', {})
    assert [e.seq for e in Spool(tmp_path).peek(10)] == [1, 2, 3, 4, 5]


def test_a_half_written_entry_is_discarded(tmp_path):
    Spool(tmp_path).append(b'{"robot_id": "r"}', {})
    (tmp_path / "tmp-000000000001").mkdir()
    spool = Spool(tmp_path)
    assert len(spool) == 1
    assert not (tmp_path / "tmp-000000000001").exists()
