"""Shard leases in Redis: who holds which shard, and which workers are alive.

The small interface ``LeaseTable`` is all the shard keeper (shards/ownership.py) needs.
``RedisLeases`` implements it on redis-py's asyncio client, a single Redis or a
``redis.asyncio.RedisCluster``. The lease keys carry a Redis Cluster hash tag, one of
``LEASE_GROUPS``, so the keys of one group share a slot and one script call renews (takes,
gives back, reads) up to ``MAX_KEYS_PER_CALL`` of them: a keeper's round is a few calls per
group, not one per shard (one EVAL per shard was 18 % of a busy worker's GIL time). On a
cluster the calls go in one pipeline per master, each bounded in time: a dead master
costs the leases it holds, never those on the masters that are up.

Why Redis and not PostgreSQL: a lease is transient, must expire by itself when its
holder dies (``PX``), and is renewed every second by every worker; that load belongs in
Redis, which the pool already shares for its bus. What must survive Redis is the
fencing token, so the epochs live in the chat store (``ChatStore.claim_shards``) and
are checked there: a lease lost with a Redis failover costs a takeover, never a write
by two owners.

Keys: ``pchat:lease:{<shard mod LEASE_GROUPS>}:<shard>`` holds ``"<node>/<incarnation>"``
with a TTL (``lease_key``, the one place that names them); ``pchat:nodes`` is a sorted set
of ``"<node>/<incarnation>/<workers of its host>"`` scored by expiry (Redis's own clock,
so hosts' clocks need not agree).
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

# Each script handles KEYS, all of one hash tag, and returns 1 or 0 per key, in order.
# A free lease, or one held by this worker's predecessor (the same node id before a
# restart: its supervisor saw it exit), is taken. ARGV: holder, the predecessor's prefix
# ("<node>/") or "", ttl.
_ACQUIRE = (
    "local out = {} for i, k in ipairs(KEYS) do local v = redis.call('get', k)"
    " if v == false or (ARGV[2] ~= '' and string.sub(v, 1, #ARGV[2]) == ARGV[2]) then"
    " redis.call('set', k, ARGV[1], 'px', ARGV[3]) out[i] = 1 else out[i] = 0 end end"
    " return out"
)
# Renewed only while still ours: a paused worker that wakes must not extend a lease
# another worker took meanwhile.
_RENEW = (
    "local out = {} for i, k in ipairs(KEYS) do"
    " if redis.call('get', k) == ARGV[1] then out[i] = redis.call('pexpire', k, ARGV[2])"
    " else out[i] = 0 end end return out"
)
_RELEASE = (
    "local out = {} for i, k in ipairs(KEYS) do"
    " if redis.call('get', k) == ARGV[1] then out[i] = redis.call('del', k)"
    " else out[i] = 0 end end return out"
)
# The holders, as a script: redis-py refuses a pipelined MGET on a cluster (its keys
# may span slots, it cannot know they do not), while a script's KEYS route by their slot.
_HOLDERS = "return redis.call('mget', unpack(KEYS))"
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


# The hash tags the lease keys are spread over. More tags than masters, so that a cluster
# of 3 to 8 masters holds some of each (a dead master costs only its share of the
# leases); few, so that a round of 1024 shards is 16 script calls, not 1024.
LEASE_GROUPS = 16
# Keys per script call: a script holds Redis (the pool's bus too) for as long as it runs,
# so one call stays at ~128 GETs/PEXPIREs (tens of µs) however many shards a pool has;
# it also keeps ``unpack(KEYS)`` far below Lua's stack limit (8000).
MAX_KEYS_PER_CALL = 128
# The per-group key lists kept built. A keeper asks for a few sequences each round (its
# own shards, every shard, a take or handover batch), the same ones round after round;
# 8 covers those, and bounds the memory when shards move every round (each entry is
# ~1024 keys, ~100 KB).
MAX_BUILT_LISTS = 8


def lease_key(shard: int) -> str:
    """The one place that names a lease key: its hash tag is the shard's group."""
    return f"pchat:lease:{{{shard % LEASE_GROUPS}}}:{shard}"


class _Call:
    """One script call's part of a sequence of shards: keys of one group, at most
    MAX_KEYS_PER_CALL, and where each shard sits in the sequence."""

    __slots__ = ("at", "keys", "shards")

    def __init__(self, shards: tuple[int, ...], at: tuple[int, ...]) -> None:
        self.shards = shards
        self.at = at
        self.keys = tuple(lease_key(shard) for shard in shards)


def _build(shards: tuple[int, ...]) -> list[_Call]:
    groups: dict[int, list[int]] = {}
    for i, shard in enumerate(shards):
        groups.setdefault(shard % LEASE_GROUPS, []).append(i)
    calls = []
    for at in groups.values():
        for start in range(0, len(at), MAX_KEYS_PER_CALL):
            part = tuple(at[start : start + MAX_KEYS_PER_CALL])
            calls.append(_Call(tuple(shards[i] for i in part), part))
    return calls


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
        self._built: dict[tuple[int, ...], list[_Call]] = {}  # oldest first

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
        """One script MGET per call of ``_calls``; a master that fails fails the read (the
        keeper plans nothing this round rather than take shards it only thinks are free)."""
        out: list[str | None] = [None] * len(shards)
        done, errors = await self._run(_HOLDERS, shards, ())
        if errors:
            raise errors[0]
        for call, values in done:
            for i, value in zip(call.at, values, strict=True):
                out[i] = None if value is None else _text(value)
        return out

    def _calls(self, shards: Sequence[int]) -> list[_Call]:
        """``shards`` as script calls, built once per sequence (a keeper renews the same
        shards and reads the same holders every round)."""
        key = tuple(shards)
        calls = self._built.pop(key, None)
        if calls is None:
            calls = _build(key)
            if len(self._built) >= MAX_BUILT_LISTS:
                del self._built[next(iter(self._built))]
        self._built[key] = calls  # the most recently used last
        return calls

    async def _by_master(self, calls: list[_Call]) -> list[list[_Call]]:
        """The calls by the master that holds their keys (one group on a single Redis)."""
        cluster = self._redis
        if not isinstance(cluster, RedisCluster):
            return [calls]
        await self._bounded(cluster.initialize())  # the slot map (a no-op once known)
        groups: dict[str, list[_Call]] = {}
        for call in calls:
            node = cluster.get_node_from_key(call.keys[0])
            groups.setdefault(node.name if node else "", []).append(call)
        return list(groups.values())

    async def _pipeline(
        self, script: str, calls: list[_Call], args: tuple[object, ...]
    ) -> list[tuple[_Call, list[object]]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for call in calls:
                pipe.eval(script, len(call.keys), *call.keys, *args)  # type: ignore[arg-type]
            results = await self._bounded(pipe.execute())
        return list(zip(calls, results, strict=True))

    async def _run(
        self, script: str, shards: Sequence[int], args: tuple[object, ...]
    ) -> tuple[list[tuple[_Call, list[object]]], list[Exception]]:
        """``script`` on ``shards``, one pipeline per master at once: the replies of the
        masters that answered, and the errors of those that did not."""
        if not shards:
            return [], []
        groups = await self._by_master(self._calls(shards))
        results = await asyncio.gather(
            *(self._pipeline(script, group, args) for group in groups), return_exceptions=True
        )
        done: list[tuple[_Call, list[object]]] = []
        errors: list[Exception] = []
        for result in results:
            if isinstance(result, Exception):
                errors.append(result)
            elif isinstance(result, BaseException):
                raise result  # cancelled: the keeper's round was given up
            else:
                done += result
        return done, errors

    async def _each(self, script: str, shards: Sequence[int], *args: object) -> list[int]:
        """The shards where ``script`` returned 1. A master that fails or does not answer in
        time counts as 0 for its shards; if every master failed, its error is raised."""
        done, errors = await self._run(script, shards, args)
        if errors and not done:
            raise errors[0]
        if errors:
            log.warning("leases on %d Redis node(s) not reached: %r", len(errors), errors[0])
        return sorted(
            shard for call, oks in done for shard, ok in zip(call.shards, oks, strict=True) if ok
        )

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
