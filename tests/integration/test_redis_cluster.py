"""The bus's links on a real Redis Cluster (3 masters, 3 replicas): slots, sharded
pub/sub on every master, and a master killed under a subscribed link."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import redis
from redis.asyncio.cluster import RedisCluster

from shards.links import TOPOLOGY_CHECK_S, ClusterLink, ClusterSeeds, SingleLink
from shards.redis_clients import redis_client
from shards.resp import RespError
from shards.slots import key_slot
from tests.conftest import make_settings
from tests.redis_cluster import RedisClusterNodes

FAILOVER_BOUND_S = 20.0  # node timeout 2 s + election; generous for a loaded 2-core box


def test_slots_are_the_clusters(redis_cluster: RedisClusterNodes) -> None:
    client = redis.Redis(port=redis_cluster.ports[0], socket_timeout=2)
    try:
        for name in [b"pchat:room:general", b"pchat:worker:3", b"{tag}x", b"a{}b", b"x{y"]:
            assert key_slot(name) == client.execute_command("CLUSTER", "KEYSLOT", name)
    finally:
        client.close()


def channels_on_every_master(link: ClusterLink, per_master: int = 2) -> list[bytes]:
    """Room channels whose slots fall on each of the masters, ``per_master`` each."""
    found: dict[str, list[bytes]] = {}
    n = 0
    while len(found) < 3 or min(len(v) for v in found.values()) < per_master:
        channel = b"pchat:room:r%d" % n
        found.setdefault(link._node(channel), []).append(channel)
        n += 1
    return [c for group in found.values() for c in group[:per_master]]


async def test_sharded_pub_sub_reaches_every_master_in_order(
    redis_cluster: RedisClusterNodes,
) -> None:
    got: list[tuple[bytes, bytes]] = []
    seeds = ClusterSeeds([redis_cluster.url])
    sub = await seeds.connect(lambda ch, data: got.append((ch, data)))
    pub = await seeds.connect(lambda ch, data: None)
    try:
        channels = channels_on_every_master(sub)
        assert len({sub._node(c) for c in channels}) == 3
        await sub.subscribe(*channels)
        receivers = [pub.publish(c, b"%d" % i, now=True) for c in channels for i in range(50)]
        assert await asyncio.gather(*receivers) == [1] * len(receivers)
        await wait_for(lambda: len(got) == 50 * len(channels))
        for channel in channels:
            assert [d for c, d in got if c == channel] == [b"%d" % i for i in range(50)]
        sub.unsubscribe(channels[0])
        await asyncio.sleep(0.2)
        assert await pub.publish(channels[0], b"gone", now=True) == 0
        assert not sub.closed.is_set(), "an unsubscribe asked for is no topology change"
    finally:
        sub.close()
        pub.close()


async def wait_for(condition: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_killed_master_breaks_the_link_and_a_new_one_follows_the_replica(
    fresh_redis_cluster: RedisClusterNodes,
) -> None:
    nodes = fresh_redis_cluster
    got: list[bytes] = []
    seeds = ClusterSeeds([nodes.url])
    link = await seeds.connect(lambda _ch, data: got.append(data))
    channels = channels_on_every_master(link, per_master=1)
    await link.subscribe(*channels)
    victim_url = link._node(channels[0])
    victim = int(victim_url.rpartition(":")[2])
    nodes.kill(victim)
    killed_at = time.monotonic()
    await asyncio.wait_for(link.closed.wait(), 5.0)
    link.close()
    # Reconnecting fails until the replica is promoted, then lands on it; the seed list
    # holds every node learned, so this works even when the killed node was the seed.
    while True:
        try:
            link = await seeds.connect(lambda _ch, data: got.append(data))
            await link.subscribe(*channels)
            break
        except (OSError, TimeoutError, RespError) as exc:
            assert time.monotonic() - killed_at < FAILOVER_BOUND_S, f"no failover: {exc}"
            await asyncio.sleep(0.2)
    try:
        assert link._node(channels[0]) != victim_url
        assert await link.publish(channels[0], b"after", now=True) == 1
        await wait_for(lambda: b"after" in got)
    finally:
        link.close()


async def test_single_link_publishes_and_subscribes(redis_url: str) -> None:
    got: list[bytes] = []
    link = await SingleLink.connect(redis_url, lambda _ch, data: got.append(data))
    try:
        await link.subscribe(b"pchat:room:one")
        assert await link.publish(b"pchat:room:one", b"x", now=True) == 1
        await wait_for(lambda: got == [b"x"])
    finally:
        link.close()


async def test_a_manual_failover_is_noticed_without_a_broken_connection(
    fresh_redis_cluster: RedisClusterNodes,
) -> None:
    """CLUSTER FAILOVER on a replica: the old master stays up as a replica, so only the
    link's own checks (sunsubscribe, MOVED, the slot map) can tell it to move."""
    nodes = fresh_redis_cluster
    seeds = ClusterSeeds([nodes.url])
    link = await seeds.connect(lambda _ch, _data: None)
    try:
        channel = channels_on_every_master(link, per_master=1)[0]
        await link.subscribe(channel)
        old = int(link._node(channel).rpartition(":")[2])
        replica = next(
            p for p, role in nodes.roles().items() if role[0] == "slave" and role[2] == old
        )
        client = redis.Redis(port=replica, socket_timeout=2)
        try:
            client.execute_command("CLUSTER", "FAILOVER")
        finally:
            client.close()
        await asyncio.wait_for(link.closed.wait(), TOPOLOGY_CHECK_S + 10.0)
    finally:
        link.close()
    # The nodes agree on the new map within moments; a link made before that sees the old
    # one and is broken again by its own checks (as above), so the bus converges.
    deadline = time.monotonic() + 10.0
    while True:
        link = await seeds.connect(lambda _ch, _data: None)
        try:
            if link._node(channel).endswith(f":{replica}"):
                return
        finally:
            link.close()
        assert time.monotonic() < deadline, "the new master never took the channel"
        await asyncio.sleep(0.2)


async def test_redis_client_gives_a_cluster_client_that_routes_keys(
    redis_cluster: RedisClusterNodes, tmp_path: Path
) -> None:
    """What leases use: keys on every master through one client from the settings."""
    settings = make_settings(tmp_path, redis_cluster.url)
    settings = msgspec.structs.replace(
        settings, redis_cluster=True, redis_cluster_seeds=redis_cluster.seeds[1:]
    )
    client = redis_client(settings, socket_timeout=2)
    assert isinstance(client, RedisCluster)
    try:
        keys = [f"pchat:shard:{k}" for k in range(30)]
        assert len({redis_cluster.master_of(k.encode()) for k in keys}) == 3
        for key in keys:
            assert await client.set(key, "owner", nx=True, px=5000)
        assert [await client.get(k) for k in keys] == [b"owner"] * len(keys)
        assert await client.publish("pchat:admin", "changed") >= 0
    finally:
        await client.aclose()
    single = redis_client(make_settings(tmp_path, "redis://127.0.0.1:1"))
    assert not isinstance(single, RedisCluster)
    await single.aclose()
