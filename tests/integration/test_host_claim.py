"""Two hosts with one host_id (issue 14): the host claim in a real Redis and a real Redis
Cluster, and the store's fencing that keeps one writer even without the claim."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from core.config import LeaseSettings, Settings
from core.errors import Fenced
from core.store.base import ChatStore, NewMessage
from core.store.registry import make_store
from shards import host_claim
from shards.claim import InUse
from shards.leases import NODES_KEY, RedisLeases, lease_key, no_retry
from shards.ownership import ShardKeeper
from tests.integration.test_leases import FAST, SHARDS, Hooked, pause, until
from tests.integration.test_store import category, room
from tests.redis_cluster import RedisClusterNodes

BOUND_S = 30.0  # each test body (pytest-timeout cannot stop uvloop)
NODE = 1000  # worker 0 of host 1, on both hosts
ONE = LeaseSettings(host_id=1)


def bounded(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """The test's body within BOUND_S (a hang fails instead of stalling the run)."""

    @functools.wraps(test)
    async def run(*args: object, **kwargs: object) -> None:
        await asyncio.wait_for(test(*args, **kwargs), BOUND_S)

    return run


@pytest.fixture(params=["redis", "cluster"])
async def client(
    request: pytest.FixtureRequest, redis_url: str, redis_cluster: RedisClusterNodes
) -> AsyncIterator[tuple[aioredis.Redis | RedisCluster, Settings]]:
    """A lease client and the settings naming its Redis: one Redis, or the cluster."""
    if request.param == "redis":
        settings = Settings(redis_url=redis_url, workers=2, leases=ONE)
        redis: aioredis.Redis | RedisCluster = aioredis.Redis.from_url(redis_url, socket_timeout=2)
    else:
        settings = Settings(redis_url=redis_cluster.url, redis_cluster=True, workers=2, leases=ONE)
        redis = RedisCluster.from_url(redis_cluster.url, retry=no_retry(), socket_timeout=2)

    async def clean() -> None:
        await redis.delete(NODES_KEY)
        await redis.delete(host_claim.claim_key(1))
        for shard in range(SHARDS):
            await redis.delete(lease_key(shard))

    await clean()
    try:
        yield redis, settings
    finally:
        await clean()
        await redis.aclose()


def keeper(redis: aioredis.Redis | RedisCluster, store: ChatStore, claim: str | None) -> Hooked:
    leases = RedisLeases(redis, host=(1, claim) if claim else None)
    return Hooked(ShardKeeper(leases, store, FAST, node=NODE, workers=1, shards=SHARDS))


@bounded
async def test_a_second_host_with_one_host_id_takes_nothing(
    client: tuple[aioredis.Redis | RedisCluster, Settings], tmp_path: Path
) -> None:
    redis, _ = client
    store = make_store(f"sqlite://{tmp_path / 'chat.db'}")
    await store.open()
    first = keeper(redis, store, "t1 hostA (SIP 127.0.0.2:5060)")
    second = keeper(redis, store, "t2 hostB (SIP 127.0.0.3:5060)")
    try:
        await first.keeper.start(first)
        assert first.keeper.owned == list(range(SHARDS))
        await second.keeper.start(second)
        assert second.keeper.refused.is_set()
        assert "127.0.0.2:5060" in second.keeper.refusal
        assert "leases.host_id 1" in second.keeper.refusal
        for _ in range(5):  # rounds of both: the first keeps every shard
            await second.keeper.tick()
            await first.keeper.tick()
        assert second.taken == [] and second.keeper.owned == []
        assert first.keeper.owned == list(range(SHARDS)) and first.dropped == []
        # the refused host never entered the live set (its workers place nothing)
        members = [m.decode() for m in await redis.zrange(NODES_KEY, 0, -1)]
        assert members == [first.keeper._member]
    finally:
        await second.keeper.stop()
        await first.keeper.stop()
        await store.close()


@bounded
async def test_the_supervisor_claim_refuses_another_address_and_takes_its_own(
    client: tuple[aioredis.Redis | RedisCluster, Settings],
) -> None:
    _, settings = client
    await host_claim.take(settings, "t1 hostA (SIP 127.0.0.2:5060)")
    with pytest.raises(InUse) as refused:
        await host_claim.take(settings, "t2 hostB (SIP 127.0.0.3:5060)")
    assert str(refused.value) == (
        "leases.host_id 1 is already used by the pool host at hostA (SIP 127.0.0.2:5060): "
        "give each host its own leases.host_id (PCHAT_LEASES__HOST_ID)"
    )
    # the same address again is the host restarted after a crash: its claim is taken over
    await host_claim.take(settings, "t3 hostA (SIP 127.0.0.2:5060)")
    await host_claim.release(settings, "t1 hostA (SIP 127.0.0.2:5060)")  # not its own: kept
    with pytest.raises(InUse):
        await host_claim.take(settings, "t2 hostB (SIP 127.0.0.3:5060)")
    await host_claim.release(settings, "t3 hostA (SIP 127.0.0.2:5060)")
    await host_claim.take(settings, "t2 hostB (SIP 127.0.0.3:5060)")  # free after a stop


@bounded
async def test_without_the_claim_the_store_still_keeps_one_writer(
    redis_url: str, store: ChatStore
) -> None:
    """What the claim spares the pool: two hosts of one host_id take each other's leases
    (their workers have the same ids), but each takeover claims a new epoch in the store,
    which refuses the writes of the one that lost the shard."""
    redis = aioredis.Redis.from_url(redis_url, socket_timeout=2)
    await redis.delete(NODES_KEY, *[lease_key(k) for k in range(SHARDS)])
    await store.put_category(category())
    await store.put_room(room("r1", "Lobby"))
    first, second = keeper(redis, store, None), keeper(redis, store, None)
    try:
        await first.keeper.start(first)
        old = first.keeper.token(1)
        await second.keeper.start(second)  # takes the "predecessor's" leases at once
        await until(lambda: 1 in second.keeper.owned)
        pause(first)  # they would go on taking it from each other; freeze one to write
        await until(lambda: 1 in second.keeper.owned)
        new = second.keeper.token(1)
        assert new[1] > old[1]
        stale = NewMessage(
            room_id="r1", seq=1, author="a", ts_ms=1, text="x", shard=1, epoch=old[1]
        )
        with pytest.raises(Fenced):
            await store.append_messages([stale])
        fresh = NewMessage(
            room_id="r1", seq=1, author="b", ts_ms=2, text="y", shard=1, epoch=new[1]
        )
        await store.append_messages([fresh])
        assert [m.text for m in await store.history_last("r1", 5)] == ["y"]
    finally:
        await second.keeper.stop()
        await first.keeper.stop()
        await redis.aclose()
