"""Owner requests over a Redis Cluster whose master stops answering without a reset (a
paused or cut-off host: SIGSTOP here): each request to a shard whose channel that master
serves fails fast with Overloaded (503 + Retry-After at the edge), never hanging; the
waiting requests are capped; the path comes back by itself once the replica is promoted."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any, cast

import pytest

from core.errors import Overloaded
from shards import bus_client as bus_module
from shards import wire
from shards.bus import PUBLISH_TIMEOUT_S, RedisBus
from shards.links import ClusterSeeds
from shards.metrics import Metrics
from shards.routing import ALL_SHARDS, ShardMap
from tests.redis_cluster import RedisClusterNodes

SHARDS = 64
BOUND_S = 30.0  # the whole test body (pytest-timeout cannot stop uvloop)
FAILOVER_BOUND_S = 20.0  # node timeout 2 s + election; generous for a loaded 2-core box


def room_on(nodes: RedisClusterNodes, shard_map: ShardMap, master: int) -> str:
    """A room whose shard's request channel lives on ``master``."""
    for i in range(10_000):
        room = f"r{i}"
        if nodes.master_of(wire.owner_channel(shard_map.shard(room))) == master:
            return room
    raise AssertionError("no room on that master")


async def started_bus(nodes: RedisClusterNodes, shard_map: ShardMap) -> RedisBus:
    bus = RedisBus(nodes.url, 1, shard_map, Metrics(), ClusterSeeds(nodes.seeds).connect)
    # Only requests are sent: no owner, no gateway is reached (nobody serves a shard).
    await bus.start(cast(Any, None), cast(Any, None), ALL_SHARDS)
    assert bus.up
    return bus


async def outcome(bus: RedisBus, room: str) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(Overloaded) as refused:
        await bus.part(room, "s1")
    return str(refused.value), time.monotonic() - started


async def test_requests_to_a_stopped_master_fail_fast_and_recover(
    fresh_redis_cluster: RedisClusterNodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = fresh_redis_cluster
    shard_map = ShardMap(shards=SHARDS, workers=1, domain="example.com")

    async def body() -> None:
        bus = await started_bus(nodes, shard_map)
        try:
            masters = nodes.masters()
            victim = next(m for m in masters if m != nodes.master_of(wire.CONTROL_CHANNEL))
            room = room_on(nodes, shard_map, victim)
            # up: the publish reaches the master, which says nobody serves the shard
            text, took = await outcome(bus, room)
            assert "has no owner right now" in text and took < 0.5
            os.kill(nodes.procs[victim].pid, signal.SIGSTOP)
            stopped_at = time.monotonic()
            try:
                # capped: with the cap reached, the next request is refused at once
                monkeypatch.setattr(bus_module, "MAX_WAITING", 4)
                waiting = [asyncio.ensure_future(outcome(bus, room)) for _ in range(4)]
                await asyncio.sleep(0.05)
                text, took = await outcome(bus, room)
                assert took < 0.1 and "too many requests" in text, (text, took)
                for text, took in await asyncio.gather(*waiting):
                    assert "does not answer" in text or "bus is down" in text, text
                    assert took < PUBLISH_TIMEOUT_S + 0.5, took
                monkeypatch.setattr(bus_module, "MAX_WAITING", 4096)
                # every request during the failover has its answer within the bound, until
                # the replica serves the channel and the publish gets through again
                longest = 0.0
                while True:
                    assert time.monotonic() - stopped_at < FAILOVER_BOUND_S, "never recovered"
                    text, took = await outcome(bus, room)
                    longest = max(longest, took)
                    if "has no owner right now" in text:
                        break
                    await asyncio.sleep(0.1)
                outage = time.monotonic() - stopped_at
                assert longest < PUBLISH_TIMEOUT_S + 0.5, longest
                print(f"outage {outage:.1f} s, longest request {longest:.2f} s")
            finally:
                os.kill(nodes.procs[victim].pid, signal.SIGCONT)
        finally:
            await bus.stop()

    await asyncio.wait_for(body(), BOUND_S)
