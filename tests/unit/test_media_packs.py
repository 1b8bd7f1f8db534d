"""How the shipper packs a backlog: each robot's episodes, in order, up to a byte cap per object."""

import json

from fleet_agent.publisher import PACK_SUFFIX, pack_key, plan_packs
from fleet_agent.spool import Spool


def spooled(tmp_path, robots: list[str], size: int = 100):
    spool = Spool(tmp_path)
    for n, robot in enumerate(robots):
        key = f"episodes/{robot}/2026/12/03/e{n}.npz.zst"
        message = {"robot_id": robot, "media": {"key": key, "sha256": f"{n:064x}"}}
        spool.append(json.dumps(message).encode(), bytes(size))
    return spool.peek(len(robots))


def robots_of(packs) -> list[list[str]]:
    return [[e.robot_id() + f"#{e.seq}" for e in pack] for pack in packs]


def test_each_robots_episodes_are_packed_together_in_spool_order(tmp_path):
    entries = spooled(tmp_path, ["a", "b", "a", "c", "b", "a"])
    assert robots_of(plan_packs(entries, 1 << 20)) == [["a#0", "a#2", "a#5"], ["b#1", "b#4"], ["c#3"]]


def test_a_pack_closes_at_its_byte_cap_and_an_oversize_episode_travels_alone(tmp_path):
    entries = spooled(tmp_path, ["a"] * 5, size=100)
    assert robots_of(plan_packs(entries, 250)) == [["a#0", "a#1"], ["a#2", "a#3"], ["a#4"]]
    assert robots_of(plan_packs(entries, 50)) == [["a#0"], ["a#1"], ["a#2"], ["a#3"], ["a#4"]]
    assert robots_of(plan_packs(entries, 0)) == robots_of(plan_packs(entries, 50)), "0 turns packing off"


def test_a_pack_is_named_by_its_members_under_the_robots_prefix_and_a_single_keeps_its_own_key(tmp_path):
    entries = spooled(tmp_path, ["a", "a", "a"])
    key = pack_key(entries[:2])
    assert key.startswith("episodes/a/2026/12/03/") and key.endswith(PACK_SUFFIX)
    assert pack_key(entries[:2]) == key, "the same members, the same name: a retry rewrites the same bytes"
    assert pack_key(entries[1:]) != key and pack_key(entries) != key
    assert pack_key(entries[:1]) == entries[0].media_key()
