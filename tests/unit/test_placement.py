"""Shard placement: one host is k % workers; hosts share fairly and move little."""

from __future__ import annotations

from collections import Counter

from shards.placement import Placement, host_of, node_id

SHARDS = 1024


def targets(live: dict[int, int]) -> list[int]:
    placement = Placement(live)
    out = []
    for shard in range(SHARDS):
        target = placement.target(shard)
        assert target is not None
        out.append(target[0])
    return out


def test_one_host_is_shard_mod_workers() -> None:
    live = {node_id(0, i): 4 for i in range(4)}
    assert targets(live) == [k % 4 for k in range(SHARDS)]
    assert all(Placement(live).target(k) == (k % 4, k % 4) for k in range(SHARDS))


def test_a_down_worker_has_stand_ins_on_its_host() -> None:
    live = {node_id(0, 0): 3, node_id(0, 2): 3}  # worker 1 of 3 is restarting
    placement = Placement(live)
    for shard in range(SHARDS):
        node, own = placement.target(shard) or (-1, -1)
        assert own == shard % 3
        assert node in live
        assert (node == own) == (shard % 3 != 1)
    assert Placement({}).target(5) is None


def test_hosts_share_fairly() -> None:
    live = {node_id(h, i): 2 for h in (1, 2, 3) for i in range(2)}
    per_host = Counter(host_of(n) for n in targets(live))
    assert set(per_host) == {1, 2, 3}
    assert all(abs(count - SHARDS / 3) < SHARDS * 0.06 for count in per_host.values())
    per_node = Counter(targets(live))
    assert all(abs(count - SHARDS / 6) < SHARDS * 0.05 for count in per_node.values())


def test_a_joining_host_takes_only_its_share() -> None:
    two = {node_id(h, 0): 1 for h in (1, 2)}
    three = {**two, node_id(3, 0): 1}
    before, after = targets(two), targets(three)
    moved = [k for k in range(SHARDS) if before[k] != after[k]]
    assert all(after[k] == node_id(3, 0) for k in moved)  # nothing moves between old hosts
    assert abs(len(moved) - SHARDS / 3) < SHARDS * 0.06
    # and when it leaves again, exactly those come back
    assert targets(two) == before
