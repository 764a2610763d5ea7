"""What shard leases cost a pool: keeper rounds of many workers against one Redis.

    python -m bench.lease_cost [--hosts 3] [--workers 4] [--seconds 20] [--name after]
    python -m bench.lease_cost --hold 512 [--name after]

Runs hosts x workers shard keepers (shards/ownership.py, 1024 shards, the default
[leases] settings) in one process against a private redis-server (unix socket) and an
SQLite store, waits until they hold every shard, then measures for --seconds of steady
state: the keepers' rounds (each: heartbeat, renewals, holders, planning), this
process's CPU per round (the keeper's own cost, with redis-py), Redis's commands per
second and Redis's own CPU per second. The store is touched only when a shard moves.
With --hold N it measures instead what one renewal of N leases holds the event loop: the
CPU of the call (this thread's, all of it spent on the loop while the call runs alone)
and the longest loop turn seen meanwhile by a task that yields every turn.
Writes bench/results/lease-cost-<time>[-<name>]/result.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis
import uvloop

from bench.load import report
from core.config import LeaseSettings
from core.store.registry import make_store
from shards.leases import RedisLeases
from shards.ownership import ShardKeeper
from shards.placement import node_id
from shards.redis_server import EmbeddedRedis

SHARDS = 1024
HOLD_CALLS = 300  # renewals timed by --hold (a median of 300 is steady on a noisy box)


class Quiet:
    """OwnerHooks that do nothing: only the lease work is measured."""

    async def acquired(self, shards: list[int]) -> None:
        pass

    def lost(self, shards: list[int], why: str) -> None:
        pass

    async def released(self, shards: list[int]) -> None:
        pass

    def gone(self, nodes: set[int]) -> None:
        pass

    async def stale(self) -> None:
        pass


async def _redis_counters(client: aioredis.Redis) -> tuple[int, float]:
    stats = await client.info("stats")
    cpu = await client.info("cpu")
    return int(stats["total_commands_processed"]), float(cpu["used_cpu_sys"]) + float(
        cpu["used_cpu_user"]
    )


async def _run(hosts: int, workers: int, seconds: float) -> dict[str, object]:
    folder = tempfile.mkdtemp(prefix="pchat-lease-bench-")
    server = EmbeddedRedis(f"{folder}/redis.sock", f"{folder}/redis.log")
    server.start()
    store = make_store(f"sqlite://{folder}/chat.db")
    await store.open()
    settings = LeaseSettings()
    client = aioredis.Redis.from_url(server.url)
    keepers = [
        ShardKeeper(RedisLeases(client), store, settings, node=node_id(h, i), workers=workers,
                    shards=SHARDS)
        for h in range(1, hosts + 1) for i in range(workers)
    ]  # fmt: skip
    rounds: list[float] = []
    try:
        for keeper in keepers:
            await keeper.start(Quiet())
        settle_from = time.monotonic()  # every shard held, and 5 s for the handovers
        while sum(len(k.owned) for k in keepers) < SHARDS or time.monotonic() < settle_from + 5:
            assert time.monotonic() < settle_from + 60, "the keepers never held every shard"
            await asyncio.sleep(0.2)
        for keeper in keepers:  # the measured rounds: run by hand, timed, on their period
            assert keeper._task is not None
            keeper._task.cancel()
        commands, cpu = await _redis_counters(client)
        started, cpu_start = time.monotonic(), time.process_time()
        while time.monotonic() - started < seconds:
            tick = time.monotonic()
            for keeper in keepers:
                began = time.perf_counter()
                await keeper.tick()
                rounds.append(time.perf_counter() - began)
            await asyncio.sleep(max(0.0, settings.renew_s - (time.monotonic() - tick)))
        elapsed = time.monotonic() - started
        own_cpu = time.process_time() - cpu_start
        commands_after, cpu_after = await _redis_counters(client)
        held = [len(k.owned) for k in keepers]
        for keeper in keepers:
            await keeper.stop()
    finally:
        await client.aclose()
        await store.close()
        server.stop()
    rounds.sort()
    return {
        "hosts": hosts,
        "workers_per_host": workers,
        "shards": SHARDS,
        "renew_s": settings.renew_s,
        "ttl_s": settings.ttl_s,
        "seconds": round(elapsed, 1),
        "rounds": len(rounds),
        "round_ms_median": round(statistics.median(rounds) * 1000, 2),
        "round_ms_p99": round(rounds[int(len(rounds) * 0.99) - 1] * 1000, 2),
        "keeper_cpu_ms_per_round": round(own_cpu / len(rounds) * 1000, 3),
        "redis_commands_per_s": round((commands_after - commands) / elapsed),
        "redis_cpu_percent": round((cpu_after - cpu) / elapsed * 100, 1),
        "shards_held_min_max": [min(held), max(held)],
    }


async def _turns(out: list[float]) -> None:
    """Records each gap between two of its own turns: the loop's other work in between."""
    last = time.perf_counter()
    while True:
        await asyncio.sleep(0)
        now = time.perf_counter()
        out.append(now - last)
        last = now


async def _timed_renew(leases: RedisLeases, mine: list[int], probed: bool) -> float:
    """One renewal of ``mine``: its CPU (the call alone on the loop), or with ``probed``
    the longest loop turn a yielding task saw meanwhile (that task spins, so its own
    CPU would count in the call's)."""
    turns: list[float] = []
    probe = asyncio.get_running_loop().create_task(_turns(turns)) if probed else None
    await asyncio.sleep(0)
    began, cpu_began = time.perf_counter(), time.thread_time()
    assert len(await leases.renew(mine, "0/bench", 3000)) == len(mine)
    cpu, wall = time.thread_time() - cpu_began, time.perf_counter() - began
    if probe is None:
        return cpu
    probe.cancel()
    return max(turns, default=wall)


async def _hold(shards: int) -> dict[str, object]:
    folder = tempfile.mkdtemp(prefix="pchat-lease-bench-")
    server = EmbeddedRedis(f"{folder}/redis.sock", f"{folder}/redis.log")
    server.start()
    client = aioredis.Redis.from_url(server.url)
    leases = RedisLeases(client)
    mine = list(range(0, 2 * shards, 2))  # a worker of two: every other shard
    try:
        assert len(await leases.acquire(mine, "0/bench", "", 3000)) == shards
        cpu = [await _timed_renew(leases, mine, False) for _ in range(HOLD_CALLS)]
        turn = sorted([await _timed_renew(leases, mine, True) for _ in range(HOLD_CALLS)])
    finally:
        await client.aclose()
        server.stop()
    return {
        "renew_shards": shards,
        "calls": HOLD_CALLS,
        "renew_cpu_us_median": round(statistics.median(cpu) * 1e6, 1),
        "longest_loop_turn_us_median": round(statistics.median(turn) * 1e6, 1),
        "longest_loop_turn_us_p99": round(turn[int(len(turn) * 0.99) - 1] * 1e6, 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument("--workers", type=int, default=4, help="workers per host")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--hold", type=int, default=0, help="time one renewal of this many leases")
    p.add_argument("--name", default="", help="suffix of the results folder")
    args = p.parse_args()
    if args.hold:
        result = uvloop.run(_hold(args.hold))
    else:
        result = uvloop.run(_run(args.hosts, args.workers, args.seconds))
    name = time.strftime("lease-cost-%Y%m%d-%H%M%S") + (f"-{args.name}" if args.name else "")
    report.write_small(Path("bench/results") / name, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
