"""The shard keeper: one worker's leases, taken, renewed, handed over and given up.

Every ``leases.renew_s`` each worker (1) keeps itself in the live set, (2) renews its
leases, (3) reads every shard's holder and compares with ``Placement``: free shards
that should be its own it takes (claiming a new fencing epoch in the chat store before
it serves them), shards that belong to a worker that is back or new it hands over, a
bounded number per tick. A worker trusts its leases only until ``valid_until``, a
little less than the TTL after the last renewal round began, so one that was paused
stops serving before anybody else may have taken over; the store's fencing check
catches whatever slips through (ARCHITECTURE §8).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis

from core.config import LeaseSettings
from core.errors import Overloaded, PchatError
from core.store.base import ChatStore
from shards.host_claim import DuplicateHost
from shards.leases import LeaseTable
from shards.placement import Placement
from shards.waits import wait_set

log = logging.getLogger(__name__)

TRUST = 0.8  # a lease is trusted for this share of its TTL after its renewal was sent
MIN_TICK_S = 0.1  # wake-ups (another worker left or came) run a tick at most this often


class OwnerHooks(Protocol):
    """What taking and losing shards means for the rest of the worker (the bus, the owner)."""

    async def acquired(self, shards: list[int]) -> None:
        """Serve them: subscribe to their requests, tell gateways to re-announce joins."""

    def lost(self, shards: list[int], why: str) -> None:
        """Stop serving them at once and forget their rooms."""

    async def released(self, shards: list[int]) -> None:
        """They are free now: wake the workers that take them."""

    def gone(self, nodes: set[int]) -> None:
        """These workers are no longer alive: their sessions leave every roster."""

    async def stale(self) -> None:
        """This worker missed its own lease (paused): the others may have dropped its
        sessions; re-announce them."""


def _parse_member(member: str) -> tuple[int, int] | None:
    node, _, rest = member.partition("/")
    _, _, workers = rest.partition("/")
    try:
        return int(node), int(workers)
    except ValueError:
        return None


class ShardKeeper:
    """Owns the worker's view of which shards it holds, with which fencing epoch."""

    def __init__(
        self,
        table: LeaseTable,
        store: ChatStore,
        settings: LeaseSettings,
        *,
        node: int,
        workers: int,
        shards: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._table = table
        self._store = store
        self.node = node
        self._shards = shards
        self._ttl_s = settings.ttl_s
        self._ttl_ms = int(settings.ttl_s * 1000)
        self._renew_s = settings.renew_s
        self._batch = settings.handover_batch
        self._clock = clock
        self._prefix = f"{node}/"  # any incarnation of this node: a predecessor's leases
        self.holder = f"{node}/{secrets.token_hex(4)}"
        self._member = f"{self.holder}/{workers}"
        self._owned: dict[int, int] = {}  # shard -> fencing epoch
        self._renewed_at = -1e9  # when the last full round (heartbeat, renewals) began
        self._started = clock()
        self._beat_at = 0.0  # when the last heartbeat that got through was sent
        self._live: set[int] = set()
        self._placed: tuple[frozenset[tuple[int, int]], list[tuple[int, int] | None]] | None = None
        self._missing: dict[int, float] = {}  # workers seen alive, then not: since when
        self._hooks: OwnerHooks | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Set by stop() before it cancels the loop: the loop also ends on it when a cancel
        # is lost anyway (one that meets the end of a tick's own awaits).
        self._stopping = False
        # Set when another host holds this host's host_id claim: this worker serves no
        # shard any more and its process stops (``refusal`` says why).
        self.refused = asyncio.Event()
        self.refusal = ""

    def owns(self, shard: int) -> bool:
        return shard in self._owned and self._clock() < self._valid_until

    @property
    def _valid_until(self) -> float:
        """Leases are trusted until then: their TTL started after the round began."""
        return self._renewed_at + self._ttl_s * TRUST

    def epoch(self, shard: int) -> int | None:
        """The fencing token of a shard this worker serves now, else None."""
        return self._owned.get(shard) if self._clock() < self._valid_until else None

    def token(self, shard: int) -> tuple[int, int]:
        """(shard, epoch) to write with; Overloaded (503, the client retries) when the
        shard is not served here now."""
        epoch = self.epoch(shard)
        if epoch is None:
            raise Overloaded(f"shard {shard} is not served by this worker now")
        return shard, epoch

    @property
    def owned(self) -> list[int]:
        return sorted(self._owned)

    def wake(self) -> None:
        self._wake.set()

    def fenced(self, tokens: list[tuple[int, int]]) -> None:
        """The store refused writes with these tokens: step down where they are still ours."""
        stale = [shard for shard, epoch in tokens if self._owned.get(shard) == epoch]
        if stale:
            self._lose(stale, "the store refused its fencing token (another worker took over)")

    async def start(self, hooks: OwnerHooks) -> None:
        """Takes this worker's first shards before it serves, then keeps them."""
        self._hooks = hooks
        await self._tick_logged()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="shard-keeper")

    async def stop(self) -> None:
        """Gives every lease back (graceful drain): the others take the shards at once."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        shards = self.owned
        self._lose(shards, "shutting down")
        with contextlib.suppress(OSError, aioredis.RedisError):
            await self._table.release(shards, self.holder)
            await self._table.leave(self._member)
            if self._hooks is not None and shards:
                await self._hooks.released(shards)

    async def _run(self) -> None:
        while not self._stopping:
            await wait_set(self._wake, self._renew_s)
            if self._stopping:
                return
            self._wake.clear()
            await self._tick_logged()
            await asyncio.sleep(MIN_TICK_S)

    async def _tick_logged(self) -> None:
        try:
            # Bounded: a round that hangs (a dead cluster node, its client's retries) is
            # given up and tried again next tick; the trust window steps this worker down
            # meanwhile if its leases could not be renewed.
            async with asyncio.timeout(self._ttl_s * TRUST):
                await self.tick()
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            log.warning("shard leases not renewed this round: Redis did not answer in time")
        except (OSError, aioredis.RedisError, PchatError) as exc:
            log.warning("shard leases not renewed this round: %s", exc)
        except Exception:
            log.exception("shard keeper round failed")

    def _lose(self, shards: list[int], why: str) -> None:
        lost = [s for s in shards if self._owned.pop(s, None) is not None]
        if lost and self._hooks is not None:
            log.info("node %d gives up %d shard(s): %s", self.node, len(lost), why)
            self._hooks.lost(lost, why)

    async def _refuse(self, why: str) -> None:
        """Another host has this host_id: its workers have these node ids, so every lease
        here is one they may take as their own. Give them all up, take none, and stop (the
        store's fencing refuses whatever write either side still tries meanwhile)."""
        if not self.refused.is_set():
            log.error("%s; this host stops serving", why)
        self.refusal = why
        self.refused.set()
        shards = self.owned
        self._lose(shards, "another host uses this host_id")
        await self._table.release(shards, self.holder)

    async def tick(self) -> None:
        assert self._hooks is not None
        if self.refused.is_set():
            return
        now = self._clock()
        if self._owned and now >= self._valid_until:
            self._lose(self.owned, "its leases ran out before they were renewed")
        # Its entry in the live set may have expired (a pause, or the set's cluster node
        # down while the leases were renewed): the others may have dropped its sessions.
        was_stale = bool(self._live) and now >= self._beat_at + self._ttl_s
        # Leases first: a failed heartbeat (its key's cluster node down) must not cost the
        # leases on the nodes that are up; those that could not be renewed are given up.
        if self._owned:
            mine = self.owned
            kept = set(await self._table.renew(mine, self.holder, self._ttl_ms))
            self._lose([s for s in mine if s not in kept], "its lease was not renewed")
        self._renewed_at = now
        try:
            members = await self._table.heartbeat(self._member, self._ttl_ms)
        except DuplicateHost as exc:
            await self._refuse(str(exc))
            return
        live = self._read_live(members)
        self._beat_at = now
        if was_stale:
            await self._hooks.stale()
        take, give = self._plan(self._targets(live), await self._table.holders(range(self._shards)))
        if give:
            self._lose(give, "handed over to its preferred worker")
            await self._table.release(give, self.holder)
            await self._hooks.released(give)
        if take:
            await self._take(take)

    def _read_live(self, members: list[str]) -> dict[int, int]:
        live = dict(m for m in map(_parse_member, members) if m is not None)
        gone = self._live - set(live) - {self.node}
        self._live = set(live)
        now = self._clock()
        for node in gone:
            self._missing[node] = now
        for node in self._live:
            self._missing.pop(node, None)
        if gone and self._hooks is not None:
            self._hooks.gone(gone)
        return live

    def _targets(self, live: dict[int, int]) -> list[tuple[int, int] | None]:
        """Every shard's target, computed again only when the live set changes (most
        rounds it does not, and 1024 rendezvous choices are most of a round's CPU)."""
        key = frozenset(live.items())
        if self._placed is None or self._placed[0] != key:
            placement = Placement(live)
            self._placed = (key, [placement.target(shard) for shard in range(self._shards)])
        return self._placed[1]

    def _plan(
        self, targets: list[tuple[int, int] | None], holders: list[str | None]
    ) -> tuple[list[int], list[int]]:
        """(shards to take, shards to hand over, at most handover_batch)."""
        now = self._clock()
        take: list[int] = []
        give: list[int] = []
        for shard, holder in enumerate(holders):
            target = targets[shard]
            if target is None:
                continue
            node, own = target
            if shard in self._owned:
                if node != self.node and node == own:
                    give.append(shard)  # its own worker is (back) up
            elif holder is not None and holder.startswith(self._prefix):
                take.append(shard)  # the worker this one replaces died holding it
            elif holder is None and node == self.node and (own == node or self._waited(own, now)):
                take.append(shard)
        return take, give[: self._batch]

    def _waited(self, own: int, now: float) -> bool:
        """A stand-in takes a down worker's free shards one TTL after it went (or after
        this worker started, if it never saw it): a worker that its supervisor restarts
        comes back to its own shards, and at a cold start each worker takes only its own."""
        return now - self._missing.get(own, self._started) >= self._ttl_s

    async def _take(self, shards: list[int]) -> None:
        assert self._hooks is not None
        got = await self._table.acquire(shards, self.holder, self._prefix, self._ttl_ms)
        if not got:
            return
        try:
            epochs = await self._store.claim_shards(got)
        except PchatError:
            await self._table.release(got, self.holder)  # no token, no service
            raise
        self._owned.update(epochs)  # their TTL began after ``now``, as the renewed ones'
        log.info("node %d took %d shard(s)", self.node, len(got))
        await self._hooks.acquired(got)
