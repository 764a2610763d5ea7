"""The bus's links to Redis: one Redis (PUBLISH/SUBSCRIBE), or a Redis Cluster (sharded).

A link is what the bus needs from Redis: publish, subscribe, unsubscribe, and ``closed``,
set when the link is broken and must be made again. On a cluster every channel is a
sharded channel (Redis 7 SPUBLISH/SSUBSCRIBE): it lives on the node that serves its slot,
so room fan-out spreads over the masters instead of every node relaying every message,
as classic PUBLISH does on a cluster. Any change of topology (a dead node, a failover, a
moved slot) breaks the whole link: the bus reconnects, re-subscribes on the nodes that
now serve each slot, re-announces its sessions and fills gaps from the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from core.config import redact_url
from shards.resp import Message, RespClient, RespError, RespSubscriber
from shards.slots import SLOTS, key_slot

log = logging.getLogger(__name__)

# How often a cluster link compares the slot map with the cluster's: a topology change
# that broke no connection (a manual failover, a resharding) is found within this.
TOPOLOGY_CHECK_S = 2.0
# Nodes a link remembers to start from: the configured seeds, then the nodes of the
# newest slot map, then older ones (a long-lived pool replaces nodes), up to this many.
MAX_SEEDS = 64
# Channel -> slot memo for the hot path (CRC16 in Python costs microseconds). Rooms, worker
# and reply channels: cleared when it grows past this, so memory stays bounded.
MAX_SLOT_MEMO = 65_536


class BusLink(Protocol):
    closed: asyncio.Event

    def publish(self, channel: bytes, data: bytes, now: bool = False) -> asyncio.Future[Any]:
        """Sends at once with ``now``, else at the end of this loop turn; the future gives
        the number of subscribers that got it."""
        ...

    async def subscribe(self, *channels: bytes) -> None: ...
    def unsubscribe(self, *channels: bytes) -> None: ...
    def close(self) -> None: ...


Connect = Callable[[Message], Awaitable[BusLink]]


class SingleLink:
    """One Redis: a pipelined publisher and one subscriber connection."""

    def __init__(self, pub: RespClient, sub: RespSubscriber) -> None:
        self._pub = pub
        self._sub = sub
        self.closed = asyncio.Event()
        self._watch = asyncio.ensure_future(self._watch_both())

    @classmethod
    async def connect(cls, url: str, on_message: Message) -> SingleLink:
        pub = await RespClient.connect(url)
        try:
            sub = await RespSubscriber.connect(url, on_message)
        except BaseException:
            pub.close()
            raise
        return cls(pub, sub)

    async def _watch_both(self) -> None:
        await _first_closed([self._pub.closed, self._sub.closed])
        self.closed.set()

    def publish(self, channel: bytes, data: bytes, now: bool = False) -> asyncio.Future[Any]:
        future = self._pub.call("PUBLISH", channel, data)
        if now:
            self._pub.flush()
        return future

    async def subscribe(self, *channels: bytes) -> None:
        await self._sub.subscribe(*channels)

    def unsubscribe(self, *channels: bytes) -> None:
        self._sub.unsubscribe(*channels)

    def close(self) -> None:
        self._watch.cancel()
        self._pub.close()
        self._sub.close()


async def _first_closed(events: list[asyncio.Event]) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def node_url(template: str, host: str, port: int) -> str:
    """``template`` (a seed's URL: scheme, password, TLS options) pointed at host:port."""
    parts = urlsplit(template)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@{host}:{port}" if auth else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, "", parts.query, ""))


class ClusterSeeds:
    """Where a cluster link starts: the configured nodes, then every node learned since,
    so a reconnect still finds the cluster when the configured seed is the node that died."""

    def __init__(self, urls: list[str]) -> None:
        if not urls:
            raise ValueError("a Redis Cluster needs at least one seed node")
        self._template = urls[0]
        self._configured = list(urls)
        self.urls = list(urls)

    async def connect(self, on_message: Message) -> ClusterLink:
        errors = []
        for url in list(self.urls):
            try:
                slots, nodes = await _slot_map(url, self._template)
            except (OSError, TimeoutError, RespError) as exc:
                errors.append(f"{redact_url(url)}: {exc}")
                continue
            known = dict.fromkeys([*self._configured, *nodes, *self.urls])
            self.urls = list(known)[:MAX_SEEDS]
            return await ClusterLink.open(slots, on_message)
        raise RespError("no Redis Cluster node answered (" + "; ".join(errors) + ")")


async def _slot_map(url: str, template: str) -> tuple[list[str], list[str]]:
    """CLUSTER SLOTS from one node: the master URL of each slot, and every node's URL."""
    client = await RespClient.connect(url)
    try:
        ranges = await asyncio.wait_for(client.call("CLUSTER", "SLOTS"), 2.0)
    finally:
        client.close()
    default_host = urlsplit(url).hostname or "127.0.0.1"
    slots = [""] * SLOTS
    nodes: list[str] = []
    for start, end, *servers in ranges:
        urls = [node_url(template, (s[0].decode() or default_host), int(s[1])) for s in servers]
        slots[start : end + 1] = [urls[0]] * (end - start + 1)
        nodes += urls
    if "" in slots:
        raise RespError("the cluster does not serve every slot (CLUSTERDOWN)")
    return slots, nodes


class ClusterLink:
    """Sharded pub/sub over the masters: one publisher and, once needed, one subscriber
    per master; each channel goes to the master that serves its slot."""

    def __init__(self, slots: list[str], pubs: dict[str, RespClient], on_message: Message):
        self._slots = slots
        self._pubs = pubs
        self._subs: dict[str, RespSubscriber] = {}
        self._on_message = on_message
        self._memo: dict[bytes, str] = {}
        self.closed = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._watch_topology())]
        for client in pubs.values():
            self._watch(client.closed)

    @classmethod
    async def open(cls, slots: list[str], on_message: Message) -> ClusterLink:
        pubs: dict[str, RespClient] = {}
        url = ""
        try:
            for url in dict.fromkeys(slots):
                pubs[url] = await RespClient.connect(url)
        except (OSError, TimeoutError) as exc:
            for client in pubs.values():
                client.close()
            # Most often a master that died and whose replica is not promoted yet.
            raise RespError(f"cluster master {redact_url(url)}: {exc}") from exc
        except BaseException:
            for client in pubs.values():
                client.close()
            raise
        return cls(slots, pubs, on_message)

    def _watch(self, event: asyncio.Event) -> None:
        self._tasks.append(asyncio.ensure_future(self._lost_when(event)))

    async def _lost_when(self, event: asyncio.Event) -> None:
        await event.wait()
        self.closed.set()

    def _node(self, channel: bytes) -> str:
        node = self._memo.get(channel)
        if node is None:
            if len(self._memo) >= MAX_SLOT_MEMO:
                self._memo.clear()
            node = self._memo[channel] = self._slots[key_slot(channel)]
        return node

    def publish(self, channel: bytes, data: bytes, now: bool = False) -> asyncio.Future[Any]:
        client = self._pubs[self._node(channel)]
        future = client.call("SPUBLISH", channel, data)
        if now:
            client.flush()
        future.add_done_callback(self._check_moved)
        return future

    def _check_moved(self, future: asyncio.Future[Any]) -> None:
        exc = None if future.cancelled() else future.exception()
        if isinstance(exc, RespError) and str(exc).startswith(("MOVED", "CLUSTERDOWN")):
            log.info("Redis Cluster topology changed (%s); reconnecting the bus", exc)
            self.closed.set()

    async def subscribe(self, *channels: bytes) -> None:
        by_node: dict[str, list[bytes]] = {}
        for channel in channels:
            by_node.setdefault(self._node(channel), []).append(channel)
        for node, group in by_node.items():
            sub = self._subs.get(node)
            if sub is None or not sub.connected:
                try:
                    sub = await RespSubscriber.connect(node, self._on_message, sharded=True)
                except (OSError, TimeoutError) as exc:
                    self.closed.set()  # a master gone since the map was read
                    raise RespError(f"cluster master {redact_url(node)}: {exc}") from exc
                self._subs[node] = sub
                self._watch(sub.closed)
            try:
                await sub.subscribe(*group)
            except RespError as exc:
                if str(exc).startswith(("MOVED", "CLUSTERDOWN")):
                    self.closed.set()  # the map is stale: the bus reconnects with a new one
                raise

    def unsubscribe(self, *channels: bytes) -> None:
        for channel in channels:
            sub = self._subs.get(self._node(channel))
            if sub is not None:
                sub.unsubscribe(channel)

    async def _watch_topology(self) -> None:
        while not self.closed.is_set():
            await asyncio.sleep(TOPOLOGY_CHECK_S)
            client = next(iter(self._pubs.values()))
            try:
                ranges = await asyncio.wait_for(client.call("CLUSTER", "SLOTS"), 2.0)
            except (TimeoutError, RespError):
                self.closed.set()
                return
            if not self._matches(ranges):
                log.info("Redis Cluster slots moved; reconnecting the bus")
                self.closed.set()

    def _matches(self, ranges: list[Any]) -> bool:
        for start, end, master, *_ in ranges:
            where = urlsplit(self._slots[start])
            if (where.port, where.hostname) != (
                int(master[1]),
                master[0].decode() or where.hostname,
            ):
                return False
            if self._slots[end] != self._slots[start]:
                return False
        return True

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for client in self._pubs.values():
            client.close()
        for sub in self._subs.values():
            sub.close()
