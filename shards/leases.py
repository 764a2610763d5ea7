"""Shard leases in Redis: who holds which shard, and which workers are alive.

The small interface ``LeaseTable`` is all the shard keeper (shards/ownership.py) needs.
``RedisLeases`` implements it on redis-py's asyncio client; every command and script
touches one key, so a ``redis.asyncio.RedisCluster`` client works as well as a single
Redis. On a cluster the per-shard scripts go in one pipeline per master, each bounded in
time: a dead master costs the leases it holds, never those on the masters that are up.

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

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Protocol, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from shards.host_claim import DuplicateHost, claim_key, refusal
from shards.redis_clients import AnyRedis

log = logging.getLogger(__name__)
T = TypeVar("T")

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
# With a second key (its host's claim, shards/host_claim.py, on the same slot), the claim
# is renewed too, or taken again if it lapsed; held by another host, nothing is written
# and the holder is returned instead of the live set. ARGV: member, ttl, claim.
_HEARTBEAT = (
    "if #KEYS > 1 then local h = redis.call('get', KEYS[2])"
    " if h and h ~= ARGV[3] then return h end"
    " redis.call('set', KEYS[2], ARGV[3], 'px', ARGV[2]) end"
    " local t = redis.call('time')"
    " local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)"
    " redis.call('zremrangebyscore', KEYS[1], '-inf', now)"
    " if ARGV[1] ~= '' then redis.call('zadd', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) end"
    " return redis.call('zrange', KEYS[1], 0, -1)"
)


def lease_key(shard: int) -> str:
    return f"pchat:lease:{shard}"


def no_retry() -> Retry:
    """The lease client's retry policy on a Redis Cluster: none. A failed call fails its
    part of the round and the keeper tries again next tick; redis-py's own retries on a
    cluster would close every connection of the client (aborting the pipelines to the
    masters that are up) and outlast the round's time bound."""
    return Retry(NoBackoff(), 0)


class LeaseTable(Protocol):
    """Leases with expiry; holders are opaque strings."""

    async def heartbeat(self, member: str, ttl_ms: int) -> list[str]:
        """Keeps ``member`` alive for ttl_ms and returns every live member; DuplicateHost
        when another host holds this host's claim (then nothing was written)."""

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
    """``LeaseTable`` on redis-py (single Redis or ``RedisCluster``); every call gives up
    after ``timeout_s`` (TimeoutError), so a keeper's round never hangs on a dead node."""

    def __init__(
        self, redis: AnyRedis, timeout_s: float = 1.0, host: tuple[int, str] | None = None
    ) -> None:
        self._redis = redis
        self._timeout_s = timeout_s
        self._host = host  # (host_id, its claim) to renew with each heartbeat, or None

    async def _bounded(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await call
        except (TimeoutError, OSError, RedisError):
            await self._refresh()
            raise

    async def heartbeat(self, member: str, ttl_ms: int) -> list[str]:
        if self._host is None:
            keys: tuple[str, ...] = (NODES_KEY,)
            args: tuple[object, ...] = (member, ttl_ms)
        else:
            keys, args = (NODES_KEY, claim_key(self._host[0])), (member, ttl_ms, self._host[1])
        live = await self._bounded(self._redis.eval(_HEARTBEAT, len(keys), *keys, *args))  # type: ignore[arg-type]
        if not isinstance(live, list):  # the claim's holder: another host uses this host_id
            raise DuplicateHost(refusal(self._host[0] if self._host else 0, _text(live)))
        return [_text(m) for m in live]

    async def leave(self, member: str) -> None:
        await self._bounded(self._redis.zrem(NODES_KEY, member))

    async def holders(self, shards: Sequence[int]) -> list[str | None]:
        keys = [lease_key(shard) for shard in shards]
        # One MGET on a single Redis; a cluster client splits it by slot (not atomic,
        # which a view that is refreshed every tick does not need).
        mget = getattr(self._redis, "mget_nonatomic", self._redis.mget)
        values = await self._bounded(mget(keys))
        return [None if v is None else _text(v) for v in values]

    async def _groups(self, shards: Sequence[int]) -> list[list[int]]:
        """The shards by the master that holds their keys (one group on a single Redis)."""
        cluster = self._redis
        if not isinstance(cluster, RedisCluster):
            return [list(shards)]
        await self._bounded(cluster.initialize())  # the slot map (a no-op once known)
        groups: dict[str, list[int]] = {}
        for shard in shards:
            node = cluster.get_node_from_key(lease_key(shard))
            groups.setdefault(node.name if node else "", []).append(shard)
        return list(groups.values())

    async def _pipeline(
        self, script: str, shards: list[int], args: tuple[object, ...]
    ) -> list[int]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.eval(script, 1, lease_key(shard), *args)  # type: ignore[arg-type]
            results = await self._bounded(pipe.execute())
        return [shard for shard, ok in zip(shards, results, strict=True) if int(ok)]

    async def _each(self, script: str, shards: Sequence[int], *args: object) -> list[int]:
        """The shards where ``script`` returned 1. A master that fails or does not answer in
        time counts as 0 for its shards; if every master failed, its error is raised."""
        if not shards:
            return []
        groups = await self._groups(shards)
        results = await asyncio.gather(
            *(self._pipeline(script, group, args) for group in groups), return_exceptions=True
        )
        done: list[int] = []
        errors: list[Exception] = []
        for result in results:
            if isinstance(result, Exception):
                errors.append(result)
            elif isinstance(result, BaseException):
                raise result  # cancelled: the keeper's round was given up
            else:
                done += result
        if errors and len(errors) == len(groups):
            raise errors[0]
        if errors:
            log.warning("leases on %d Redis node(s) not reached: %r", len(errors), errors[0])
        return sorted(done)

    async def _refresh(self) -> None:
        """A call failed: a cluster client reads the slot map again (a replica may serve a
        dead master's slots now), so the next round's calls go where the map says. Without
        this a pipeline (which never refreshes the map by itself) would try the dead master
        for ever."""
        if isinstance(self._redis, RedisCluster):
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._redis.nodes_manager.initialize()
            except (TimeoutError, OSError, RedisError) as exc:
                log.warning("the Redis Cluster's slot map could not be read: %r", exc)

    async def acquire(
        self, shards: Sequence[int], holder: str, predecessor: str, ttl_ms: int
    ) -> list[int]:
        return await self._each(_ACQUIRE, shards, holder, predecessor, ttl_ms)

    async def renew(self, shards: Sequence[int], holder: str, ttl_ms: int) -> list[int]:
        return await self._each(_RENEW, shards, holder, ttl_ms)

    async def release(self, shards: Sequence[int], holder: str) -> None:
        await self._each(_RELEASE, shards, holder)
