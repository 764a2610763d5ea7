"""Shard leases in Redis: who holds which shard, and which workers are alive.

The small interface ``LeaseTable`` is all the shard keeper (shards/ownership.py) needs.
``RedisLeases`` implements it on redis-py's asyncio client; every command and script
touches one key, so a ``redis.asyncio.RedisCluster`` client works as well as a single
Redis (pipelines are split by slot there).

Why Redis and not PostgreSQL: a lease is transient, must expire by itself when its
holder dies (``PX``), and is renewed every second by every worker; that load belongs in
Redis, which the pool already shares for its bus. What must survive Redis is the
fencing token, so the epochs live in the chat store (``ChatStore.claim_shards``) and
are checked there: a lease lost with a Redis failover costs a takeover, never a write
by two owners.

Keys: ``pchat:lease:<shard>`` holds ``"<node>/<incarnation>"`` with a TTL;
``pchat:nodes`` is a sorted set of ``"<node>/<incarnation>/<workers of its host>"``
scored by expiry (Redis's own clock, so hosts' clocks need not agree).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from shards.redis_clients import AnyRedis

NODES_KEY = "pchat:nodes"

# A free lease, or one held by this worker's predecessor (the same node id before a
# restart: its supervisor saw it exit), is taken. ARGV: holder, the predecessor's prefix
# ("<node>/") or "", ttl.
_ACQUIRE = (
    "local v = redis.call('get', KEYS[1])"
    " if v == false or (ARGV[2] ~= '' and string.sub(v, 1, #ARGV[2]) == ARGV[2]) then"
    " redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[3]) return 1 end return 0"
)
# Renewed only while still ours: a paused worker that wakes must not extend a lease
# another worker took meanwhile.
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then"
    " return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
# Heartbeat: this worker's entry expires ttl ms from now (Redis time); expired ones go.
_HEARTBEAT = (
    "local t = redis.call('time')"
    " local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)"
    " redis.call('zremrangebyscore', KEYS[1], '-inf', now)"
    " if ARGV[1] ~= '' then redis.call('zadd', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) end"
    " return redis.call('zrange', KEYS[1], 0, -1)"
)


def lease_key(shard: int) -> str:
    return f"pchat:lease:{shard}"


class LeaseTable(Protocol):
    """Leases with expiry; holders are opaque strings."""

    async def heartbeat(self, member: str, ttl_ms: int) -> list[str]:
        """Keeps ``member`` alive for ttl_ms and returns every live member."""

    async def leave(self, member: str) -> None: ...
    async def holders(self, shards: Sequence[int]) -> list[str | None]: ...
    async def acquire(
        self, shards: Sequence[int], holder: str, predecessor: str, ttl_ms: int
    ) -> list[int]:
        """The shards of ``shards`` now held by ``holder``: those that were free or held
        by a holder starting with ``predecessor`` (when not empty)."""

    async def renew(self, shards: Sequence[int], holder: str, ttl_ms: int) -> list[int]:
        """The shards still held by ``holder`` (their TTL restarted)."""

    async def release(self, shards: Sequence[int], holder: str) -> None: ...


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisLeases:
    """``LeaseTable`` on redis-py (single Redis or ``RedisCluster``)."""

    def __init__(self, redis: AnyRedis) -> None:
        self._redis = redis

    async def heartbeat(self, member: str, ttl_ms: int) -> list[str]:
        live = await self._redis.eval(_HEARTBEAT, 1, NODES_KEY, member, ttl_ms)
        return [_text(m) for m in live]

    async def leave(self, member: str) -> None:
        await self._redis.zrem(NODES_KEY, member)

    async def holders(self, shards: Sequence[int]) -> list[str | None]:
        keys = [lease_key(shard) for shard in shards]
        # One MGET on a single Redis; a cluster client splits it by slot (not atomic,
        # which a view that is refreshed every tick does not need).
        mget = getattr(self._redis, "mget_nonatomic", self._redis.mget)
        values = await mget(keys)
        return [None if v is None else _text(v) for v in values]

    async def _each(self, script: str, shards: Sequence[int], *args: object) -> list[int]:
        if not shards:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.eval(script, 1, lease_key(shard), *args)  # type: ignore[arg-type]
            results = await pipe.execute()
        return [shard for shard, ok in zip(shards, results, strict=True) if int(ok)]

    async def acquire(
        self, shards: Sequence[int], holder: str, predecessor: str, ttl_ms: int
    ) -> list[int]:
        return await self._each(_ACQUIRE, shards, holder, predecessor, ttl_ms)

    async def renew(self, shards: Sequence[int], holder: str, ttl_ms: int) -> list[int]:
        return await self._each(_RENEW, shards, holder, ttl_ms)

    async def release(self, shards: Sequence[int], holder: str) -> None:
        await self._each(_RELEASE, shards, holder)
