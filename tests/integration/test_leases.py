"""Shard leases on a real Redis and fencing epochs in a real store: the keeper's moves."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from core.config import LeaseSettings
from core.errors import Fenced
from core.store.base import ChatStore, NewMessage
from core.store.registry import make_store
from shards.leases import (
    LEASE_GROUPS,
    MAX_BUILT_LISTS,
    MAX_KEYS_PER_CALL,
    NODES_KEY,
    RedisLeases,
    lease_key,
    no_retry,
)
from shards.ownership import TRUST, ShardKeeper
from shards.redis_server import EmbeddedRedis
from tests.integration.test_store import category, room
from tests.redis_cluster import RedisClusterNodes

SHARDS = 64
FAST = LeaseSettings(ttl_s=0.6, renew_s=0.1, handover_batch=8)
FAILOVER_BOUND_S = 20.0  # node timeout 2 s + election; generous for a loaded 2-core box


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)

    async def clean() -> None:
        keys = [k async for k in client.scan_iter("pchat:lease:*")]
        await client.delete(NODES_KEY, *keys)

    await clean()
    try:
        yield client
    finally:
        await clean()
        await client.aclose()


class Hooked:
    """A keeper with recording hooks (the protocol's names)."""

    def __init__(self, keeper: ShardKeeper) -> None:
        self.keeper = keeper
        self.taken: list[int] = []
        self.dropped: list[int] = []
        self.reasons: list[str] = []
        self.gone_nodes: set[int] = set()
        self.stale_rounds = 0

    async def acquired(self, shards: list[int]) -> None:
        self.taken += shards

    def lost(self, shards: list[int], why: str) -> None:
        self.dropped += shards
        self.reasons.append(why)

    async def released(self, shards: list[int]) -> None:
        pass

    def gone(self, nodes: set[int]) -> None:
        self.gone_nodes |= nodes

    async def stale(self) -> None:
        self.stale_rounds += 1


def keeper(redis: aioredis.Redis, store: ChatStore, node: int, workers: int = 2) -> Hooked:
    return Hooked(
        ShardKeeper(RedisLeases(redis), store, FAST, node=node, workers=workers, shards=SHARDS)
    )


async def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def pause(hooked: Hooked) -> None:
    """The keeper's loop stops as a SIGSTOPped process's would (its state stays)."""
    task = hooked.keeper._task
    assert task is not None
    task.cancel()


async def test_one_host_gets_shard_mod_workers_and_a_restart_takes_its_own_back(
    redis: aioredis.Redis, store: ChatStore
) -> None:
    a, b = keeper(redis, store, 0), keeper(redis, store, 1)
    await a.keeper.start(a)
    await b.keeper.start(b)
    await until(lambda: len(a.keeper.owned) + len(b.keeper.owned) == SHARDS)
    assert a.keeper.owned == [k for k in range(SHARDS) if k % 2 == 0]
    assert b.keeper.owned == [k for k in range(SHARDS) if k % 2 == 1]
    assert a.keeper.token(2) == (2, 1)  # first claim of shard 2
    await b.keeper.stop()  # a graceful stop gives the leases back at once
    assert b.dropped == b.taken
    # a stands in for b once its start-up grace is over
    await until(lambda: a.keeper.owned == list(range(SHARDS)))
    assert a.keeper.token(3) == (3, 2)  # a new epoch for each shard taken over
    again = keeper(redis, store, 1)  # b restarted: its shards come back in bounded steps
    await again.keeper.start(again)
    await until(lambda: again.keeper.owned == [k for k in range(SHARDS) if k % 2 == 1])
    assert a.keeper.owned == [k for k in range(SHARDS) if k % 2 == 0]
    assert "handed over to its preferred worker" in a.reasons
    await again.keeper.stop()
    await a.keeper.stop()


async def test_a_paused_worker_loses_its_shards_and_its_writes(
    redis: aioredis.Redis, store: ChatStore
) -> None:
    await store.put_category(category())
    await store.put_room(room("r1", "Lobby"))
    a, b = keeper(redis, store, 0), keeper(redis, store, 1)
    await a.keeper.start(a)
    await b.keeper.start(b)
    await until(lambda: len(b.keeper.owned) == SHARDS // 2)
    old = b.keeper.token(1)
    pause(b)
    await until(lambda: 1 in a.keeper.owned)  # b's leases ran out; a stands in
    assert not b.keeper.owns(1)  # b no longer trusts its lease, without asking Redis
    post = NewMessage(room_id="r1", seq=1, author="a", ts_ms=1, text="x", shard=1, epoch=old[1])
    with pytest.raises(Fenced):
        await store.append_messages([post])
    b.keeper.fenced([old])  # what FencedWrite tells the keeper
    assert 1 in b.dropped
    await b.keeper.tick()  # it wakes: its leases ran out on its own clock, and it knows
    assert b.keeper.owned == []
    assert "its leases ran out before they were renewed" in b.reasons
    assert b.stale_rounds == 1
    assert await store.history_last("r1", 5) == []
    assert 1 in a.gone_nodes  # a saw b go, so b's sessions left a's rosters
    await a.keeper.stop()
    await b.keeper.stop()


@pytest.mark.parametrize("holds_live_set", [True, False], ids=["live-set-master", "other"])
async def test_a_killed_cluster_master_costs_only_the_leases_it_held(
    fresh_redis_cluster: RedisClusterNodes, tmp_path: Path, holds_live_set: bool
) -> None:
    """On a Redis Cluster the keeper's rounds stay bounded while a master is dead: the
    leases on the masters that are up are renewed through the failover, only those the dead
    one held are given up, and they are taken again once its replica serves them. When the
    master killed holds the live set every heartbeat fails until the failover; when not,
    only the reads of the dead master's keys fail, and the keeper must still learn the new
    slot map."""
    nodes = fresh_redis_cluster
    client = RedisCluster.from_url(nodes.url, socket_timeout=1.5, retry=no_retry())
    store = make_store(f"sqlite://{tmp_path / 'chat.db'}")
    await store.open()
    settings = LeaseSettings()  # the defaults: 3 s TTL, renewed every 0.5 s
    leases = RedisLeases(client, timeout_s=settings.ttl_s * TRUST / 3)
    a = Hooked(ShardKeeper(leases, store, settings, node=0, workers=1, shards=SHARDS))
    try:
        await a.keeper.start(a)
        assert a.keeper.owned == list(range(SHARDS))
        live_set_master = nodes.master_of(NODES_KEY.encode())
        others = [m for m in nodes.masters() if m != live_set_master]
        victim = live_set_master if holds_live_set else others[0]
        on_victim = {k for k in range(SHARDS) if nodes.master_of(lease_key(k).encode()) == victim}
        assert 0 < len(on_victim) < SHARDS
        nodes.kill(victim)
        await until(lambda: bool(a.dropped), timeout_s=FAILOVER_BOUND_S)
        assert set(a.dropped) == on_victim, "a dead master cost leases held elsewhere"
        await until(lambda: a.keeper.owned == list(range(SHARDS)), timeout_s=FAILOVER_BOUND_S)
        assert set(a.dropped) == on_victim
        assert a.keeper._task is not None and not a.keeper._task.done()
    finally:
        await a.keeper.stop()
        await client.aclose()
        await store.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    """A Redis of its own: its command counters count this test's calls alone."""
    server = EmbeddedRedis(str(tmp_path / "redis.sock"), str(tmp_path / "redis.log"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


async def _script_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("eval", "evalsha"))


async def test_a_round_is_one_script_call_per_hash_tag(private_redis: str, tmp_path: Path) -> None:
    """A keeper's round renews its leases and reads every holder with one script call per
    hash tag (more only past MAX_KEYS_PER_CALL keys of a tag), not one per shard: 4096
    shards, 256 keys per tag, two calls per tag, where one per shard would be 4096."""
    shards = 4096
    client = aioredis.Redis.from_url(private_redis)
    store = make_store(f"sqlite://{tmp_path / 'chat.db'}")
    await store.open()
    one = ShardKeeper(RedisLeases(client), store, FAST, node=0, workers=1, shards=shards)
    hooked = Hooked(one)
    try:
        await one.start(hooked)
        pause(hooked)  # the rounds below are run by hand
        assert one.owned == list(range(shards))
        await client.config_resetstat()
        await one.tick()
        per_sweep = LEASE_GROUPS * math.ceil(shards / LEASE_GROUPS / MAX_KEYS_PER_CALL)
        # renewals, the holders' read, and the heartbeat
        assert await _script_calls(client) == 2 * per_sweep + 1
        assert one.owned == list(range(shards)) and not hooked.dropped
        assert await client.get(lease_key(4095)) == one.holder.encode()
        assert await client.pttl(lease_key(7)) > 0
    finally:
        await one.stop()
        await client.aclose()
        await store.close()


async def test_holders_come_back_in_the_order_asked_and_few_key_lists_are_kept(
    redis: aioredis.Redis,
) -> None:
    leases = RedisLeases(redis)
    assert await leases.acquire([5, 21, 3], "9/x", "", 5000) == [3, 5, 21]  # 5, 21: one tag
    assert await leases.renew([3, 21, 40], "9/x", 5000) == [3, 21]
    order = list(range(SHARDS))
    random.Random(7).shuffle(order)
    held = await leases.holders(order)
    assert held == ["9/x" if k in (3, 5, 21) else None for k in order]
    for size in range(1, 3 * MAX_BUILT_LISTS):  # shards that move every round
        await leases.holders(range(size))
        assert len(leases._built) <= MAX_BUILT_LISTS
    await leases.release([5, 21, 3], "9/x")
    assert await leases.holders([3, 5, 21]) == [None, None, None]


def _awaiting(task: asyncio.Task[None] | None, name: str) -> bool:
    """Whether the task is suspended inside a coroutine called ``name``."""
    coro = task.get_coro() if task is not None else None
    while coro is not None:
        if getattr(coro, "__name__", "") == name:
            return True
        coro = getattr(coro, "cr_await", None)
    return False


async def test_stop_right_after_a_wake_does_not_hang(
    redis: aioredis.Redis, store: ChatStore
) -> None:
    # The keeper waits in wait_set(wake, renew_s). A wake in the same turn as stop()'s
    # cancel completes that wait first; with Python 3.11's wait_for the wait then returned
    # instead of raising the cancel: the loop would go on, and stop() would wait for ever.
    a = keeper(redis, store, 0)
    await a.keeper.start(a)
    await until(lambda: _awaiting(a.keeper._task, "wait_set"), 5.0)  # between rounds
    stopping = asyncio.create_task(a.keeper.stop())  # runs first in the next turn
    a.keeper.wake()  # the wait's own wake-up is queued behind it
    done, _ = await asyncio.wait({stopping}, timeout=3.0)  # asyncio.wait cancels nothing
    if not done:  # the hang: a second cancel (a real shutdown has none) ends it
        stopping.cancel()
    assert stopping in done, "stop() hung: the keeper's loop swallowed its cancel"
    assert a.keeper.owned == []
