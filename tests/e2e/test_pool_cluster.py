"""Two hosts of a pool on a real Redis Cluster (3 masters, 3 replicas) and one PostgreSQL
(issue 14 points 1-3 together): shard leases and the hosts' bus both live in the cluster,
and members on different hosts in one room get every post, in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.pool import Pool
from tests.e2e.test_pool import USERS, Member, Traffic, populate, settle_deliveries
from tests.redis_cluster import RedisClusterNodes

TEST_BOUND_S = 180.0  # start-up, 4 s of posting, the checks; on uvloop only this ends a hang


async def nothing() -> None:
    pass


async def two_hosts_talk(pool: Pool) -> None:
    await pool.hosts[0].start()
    await pool.hosts[1].start()
    shares = await pool.settled([0, 1])
    assert sum(shares.values()) == 1024
    rooms = await populate(pool, 3)
    # Two members on each host (the first address a member tries is its home host).
    members = [Member(pool, user, i % 2, rooms) for i, user in enumerate(USERS[:4])]
    for member in members:
        await member.connect()
    traffic = Traffic(members, rooms, rooms[0])
    await traffic.run(4.0, nothing)
    await settle_deliveries()
    assert len(traffic.acked) > 20, "too few posts to judge"
    assert all(m.moved == 0 for m in members), "a member lost its host"
    await traffic.check_stored_once(pool)
    traffic.check_delivered(members)
    for member in members:
        await member.close()


async def test_members_on_two_hosts_sharing_a_redis_cluster_get_every_post_in_order(
    fresh_redis_cluster: RedisClusterNodes, tmp_path: Path
) -> None:
    pool = Pool(tmp_path, cluster=fresh_redis_cluster)
    await pool.open()
    try:
        await asyncio.wait_for(two_hosts_talk(pool), TEST_BOUND_S)
    except TimeoutError:
        pytest.fail(f"two hosts on a Redis Cluster did not finish within {TEST_BOUND_S:.0f} s")
    finally:
        await pool.close()
