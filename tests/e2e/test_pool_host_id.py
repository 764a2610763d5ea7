"""Two `pchat serve` hosts given one leases.host_id (issue 14): the second refuses to
start; a running host that finds the other later (a split healed, here a host paused
past its claim) stops, and the other keeps every shard. Real supervisors on 127.0.0.2
and .3, one real redis-server, a fresh PostgreSQL database."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from shards.leases import lease_key
from tests.e2e.pool import SHARDS, Host, Pool

BOUND_S = 60.0  # the whole test body (pytest-timeout cannot stop uvloop)


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[Pool]:
    pool = Pool(tmp_path, workers=1)
    await pool.open()
    pool.hosts[1].host_id = 1  # the operator's copy-pasted config: host 2 says host_id 1
    try:
        yield pool
    finally:
        await pool.close()


async def serving(host: Host, shards: int, timeout_s: float = 20.0) -> None:
    """Waits until ``host``'s workers answer /healthz holding ``shards`` shards."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        health = await host.health()
        if health is not None and int(health["shards"]) == shards:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"host {host.addr} did not serve {shards} shards:\n{host.log_text()}")


async def lease_holders(pool: Pool) -> dict[int, str]:
    """Shard -> the holder of its lease ("<node>/<incarnation>"), straight from Redis."""
    client = aioredis.Redis.from_url(pool.redis.url, decode_responses=True)
    try:
        values = await client.mget([lease_key(k) for k in range(SHARDS)])
    finally:
        await client.aclose()
    return {k: v for k, v in enumerate(values) if v is not None}


async def exit_code(host: Host, timeout_s: float) -> int:
    assert host.proc is not None
    try:
        return await asyncio.wait_for(host.proc.wait(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"{host.addr} did not stop:\n{host.log_text()}") from None


async def test_a_second_host_with_the_same_host_id_refuses_to_start(pool: Pool) -> None:
    async def body() -> None:
        first, second = pool.hosts[0], pool.hosts[1]
        await first.start()
        await serving(first, SHARDS)
        started = asyncio.get_running_loop().time()
        await second.start()
        code = await exit_code(second, 25.0)
        took = asyncio.get_running_loop().time() - started
        text = second.log_text()
        assert code != 0
        # seconds: its start-up (imports, the store) then one Redis call; 9 s seen at load 11
        assert took < 20.0, took
        assert "Traceback" not in text
        last = text.strip().splitlines()[-1]
        assert last.startswith("pchat: leases.host_id 1 is already used by the pool host at ")
        assert f"(SIP {first.addr}:{pool.sip})" in last, last
        assert not (second.data_dir / "workers.pid").exists()  # no worker ever started
        await serving(first, SHARDS)  # the first host never noticed

    await asyncio.wait_for(body(), BOUND_S)


async def test_a_host_that_finds_its_host_id_taken_later_stops(pool: Pool) -> None:
    async def body() -> None:
        first, second = pool.hosts[0], pool.hosts[1]
        await first.start()
        await serving(first, SHARDS)
        assert first.proc is not None
        # A split: the first host is cut off (paused) past its claim and its leases...
        os.killpg(first.proc.pid, signal.SIGSTOP)
        await asyncio.sleep(4.0)  # the claim's and the leases' TTL (3 s) and a round
        # ...and meanwhile the copy-pasted host starts and serves every shard.
        await second.start()
        await serving(second, SHARDS)
        holders = await lease_holders(pool)
        assert len(holders) == SHARDS
        os.killpg(first.proc.pid, signal.SIGCONT)  # the split heals
        code = await exit_code(first, 15.0)
        text = first.log_text()
        assert code != 0
        assert "Traceback" not in text
        assert "leases.host_id 1 is already used by the pool host at " in text
        assert f"(SIP {second.addr}:{pool.sip}): give each host its own" in text
        assert "(PCHAT_LEASES__HOST_ID); this host stops serving" in text
        assert text.strip().splitlines()[-1] == (
            "pchat: another host uses leases.host_id 1 (logged above); stopping this host"
        )
        # the second host kept every shard throughout: the first took none back
        await serving(second, SHARDS, timeout_s=1.0)
        assert "gives up" not in second.log_text()
        assert await lease_holders(pool) == holders

    await asyncio.wait_for(body(), BOUND_S)
