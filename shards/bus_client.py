"""The asking side of the Redis bus: a link kept up, requests to shard owners, replies.

``BusClient`` is what every bus user shares: it keeps one link to Redis (one Redis or a
Redis Cluster, shards/links.py), subscribes to its own reply channel
``pchat:reply:<me>`` and sends owner requests (``pchat:owner:<k>``), each answered there.
``RequesterBus`` is that alone: the file service (shards/file_service.py) posts a file's
announcement to the room's owner through it. It owns no shard, holds no sessions and never
speaks on the control channel, so no owner forgets anything (drop_gateway) or waits for a
re-join because of it. The worker's ``RedisBus`` (shards/bus.py) adds the owner and
gateway sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging

from core.config import redact_url
from core.errors import Overloaded
from core.rooms.owner import PostResult
from shards import wire
from shards.links import BusLink, Connect
from shards.metrics import Metrics
from shards.resp import RespError
from shards.routing import ShardMap
from shards.waits import wait_set

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 5.0  # an owner that does not answer in this: 503, the client retries
# A request's publish that Redis has not confirmed in this: 503 at once. A live node answers
# in well under a millisecond; one that is dead without a reset (a paused or cut-off cluster
# master, until its replica is promoted) never does, and the request must not wait for it.
PUBLISH_TIMEOUT_S = 1.0
# Requests of this process waiting for another worker's answer. Over it they get 503 at
# once: with a node that does not answer, each waits its bound, and a burst of commands
# must not pile up behind it (each holds a client's transaction open).
MAX_WAITING = 4096
# Waits between reconnect attempts. Capped at 0.5 s: after a Redis Cluster failover the bus
# was the last part back (up to one 2 s wait after the promotion), and one connect attempt
# per worker per half second costs a down Redis nothing.
RECONNECT_BACKOFF_S = (0.1, 0.2, 0.5)


def file_service_node(host_id: int) -> int:
    """The file service's id on the bus: negative, so its reply channel is never a
    worker's (workers are host_id * 1000 + index >= 0, shards/placement.py)."""
    return -1 - host_id


class BusClient:
    """A kept link, the reply channel and owner requests; subclasses add what they serve."""

    def __init__(
        self, url: str, me: int, shard_map: ShardMap, metrics: Metrics, connect: Connect
    ) -> None:
        self._url = url  # for logs only; ``connect`` makes the link (one Redis or a cluster)
        self._connect_link = connect
        self._me = me
        self._map = shard_map
        self._metrics = metrics
        self._link: BusLink | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[wire.Reply]] = {}
        self._keeper: asyncio.Task[None] | None = None
        self._up = asyncio.Event()
        self._reply = wire.reply_channel(me)

    @property
    def up(self) -> bool:
        return self._up.is_set()

    async def _open(self, timeout_s: float) -> None:
        """Starts keeping the link; waits at most ``timeout_s`` for the first one."""
        self._keeper = asyncio.get_running_loop().create_task(self._keep_connected())
        if not await wait_set(self._up, timeout_s):
            log.error(
                "Redis at %s not reachable yet; requests to other workers get 503",
                redact_url(self._url),
            )

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        if self._link is not None:
            self._link.close()

    async def _keep_connected(self) -> None:
        failures = 0
        while True:
            try:
                await self._connect()
                failures = 0
                assert self._link is not None
                await self._link.closed.wait()
                log.warning("lost the Redis connection; reconnecting")
            except asyncio.CancelledError:
                raise
            except (TimeoutError, OSError, RespError) as exc:
                log.warning("Redis at %s unavailable (%s); retrying", redact_url(self._url), exc)
            self._down()
            await asyncio.sleep(RECONNECT_BACKOFF_S[min(failures, len(RECONNECT_BACKOFF_S) - 1)])
            failures += 1

    async def _connect(self) -> None:
        self._link = link = await self._connect_link(self._on_message)
        await link.subscribe(self._reply)
        await self._connected(link)
        self._up.set()

    async def _connected(self, link: BusLink) -> None:
        """After the reply channel's subscription, before the link counts as up."""

    def _down(self) -> None:
        self._up.clear()
        if self._link is not None:
            self._link.close()
        self._link = None
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(Overloaded("lost the Redis connection"))

    def _on_message(self, channel: bytes, data: bytes) -> None:
        try:
            if channel == self._reply:
                self._on_reply(data)
        except Exception:  # one bad message must not stop the subscription
            log.exception("dropped a malformed bus message on %r", channel)

    def _on_reply(self, data: bytes) -> None:
        reply = wire.reply_decoder.decode(data)
        future = self._waiting.get(reply.id)
        if future is not None and not future.done():
            future.set_result(reply)

    async def _request(self, room_id: str, op: wire.Op) -> wire.Result:
        shard = self._map.shard(room_id)
        link = self._link
        if link is None:
            self._metrics.rejected("redis")
            raise Overloaded("the Redis bus is down")
        if len(self._waiting) >= MAX_WAITING:
            self._metrics.rejected("redis")
            raise Overloaded("too many requests waiting for other workers")
        request_id = next(self._ids)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REQUEST_TIMEOUT_S
        future: asyncio.Future[wire.Reply] = loop.create_future()
        self._waiting[request_id] = future
        try:
            data = wire.encoder.encode(wire.Request(request_id, self._me, op))
            try:
                published = link.publish(wire.owner_channel(shard), data)
                receivers = await asyncio.wait_for(published, PUBLISH_TIMEOUT_S)
            except RespError as exc:
                self._metrics.rejected("redis")
                raise Overloaded("the Redis bus is down") from exc
            except TimeoutError as exc:
                self._metrics.rejected("redis")
                raise Overloaded(
                    f"the Redis node of shard {shard}'s channel does not answer"
                ) from exc
            if receivers == 0:  # no lease holder now (a takeover runs): say so now, not later
                self._metrics.rejected("owner")
                raise Overloaded(f"shard {shard} has no owner right now")
            try:
                reply = await asyncio.wait_for(future, max(0.0, deadline - loop.time()))
            except TimeoutError as exc:
                self._metrics.rejected("owner")
                raise Overloaded(f"the owner of shard {shard} did not answer") from exc
        finally:
            self._waiting.pop(request_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # failed by _down while the publish failed too: seen here
        if reply.code:
            raise wire.error_of(reply)
        return reply.result

    async def append_post(
        self, room_id: str, session: str, user: str, client_key: str, text: str
    ) -> PostResult:
        result = await self._request(
            room_id, wire.PostReq(room_id, session, user, client_key, text)
        )
        assert isinstance(result, PostResult)
        return result


class RequesterBus(BusClient):
    """Only asks: subscribes to its reply channel alone and never announces itself."""

    async def start(self, timeout_s: float = 10.0) -> None:
        await self._open(timeout_s)
        if self.up:
            log.info("requester %d on the Redis bus", self._me)
