"""A progress or state file read while another process rewrites it is always whole JSON."""

import json
import threading

from infra.files import write_json_atomic


def test_a_reader_never_sees_half_a_file_while_it_is_rewritten(tmp_path):
    path = tmp_path / "progress.json"
    write_json_atomic(path, {"step": 0})
    done, torn = threading.Event(), []

    def read_until_done():
        while not done.is_set():
            try:
                json.loads(path.read_text())
            except json.JSONDecodeError as e:
                torn.append(e)

    reader = threading.Thread(target=read_until_done)
    reader.start()
    for step in range(3000):
        write_json_atomic(path, {"step": step, "losses": {"video": 0.1} | {f"k{i}": i for i in range(200)}})
    done.set()
    reader.join()
    assert torn == []
    assert json.loads(path.read_text())["step"] == 2999
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]  # no temporary file left behind
