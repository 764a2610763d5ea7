"""The Redis bus: room events fanned out to gateways, requests to owners on other workers.

Channels (ARCHITECTURE §6): ``pchat:room:<id>`` carries a room's events; a worker
subscribes while it holds sessions in a room another worker owns. ``pchat:owner:<k>``
carries requests to shard k's rooms (only its lease holder subscribes), answered on
``pchat:reply:<asker>``. ``pchat:control`` carries announcements of workers that
(re)joined the bus, took shards or gave them up, and the owners' answers that they forgot
them. The link under it is one Redis, or a Redis Cluster where every one of these
channels is a sharded channel (shards/links.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Protocol

from core.errors import Overloaded, PchatError
from core.rooms.events import HistoryQuery, Participant, RoomEvent
from core.rooms.owner import JoinResult, RoomOwner
from core.store.base import MessageRecord
from shards import wire
from shards.bus_client import PUBLISH_TIMEOUT_S, REQUEST_TIMEOUT_S, BusClient
from shards.links import BusLink, Connect
from shards.metrics import Metrics
from shards.rejoin import Rejoiner
from shards.resp import RespError
from shards.routing import Ownership, ShardMap

__all__ = ["PUBLISH_TIMEOUT_S", "REQUEST_TIMEOUT_S", "Fanout", "Gateway", "RedisBus"]

log = logging.getLogger(__name__)

# Owner requests being served at once for other workers; over it they get 503 so a
# flood from other gateways cannot grow this worker's task list without bound.
MAX_SERVING = 10_000


class Gateway(Protocol):
    def on_event(self, event: RoomEvent) -> None: ...
    def on_remote_event(self, event: RoomEvent) -> None: ...
    def rejoin_targets(self, wanted: Callable[[int], bool]) -> list[tuple[str, Participant]]: ...
    def has_member(self, room_id: str, session: str) -> bool: ...
    def joined_remote(self, room_id: str, last_seq: int) -> None: ...


class Fanout:
    """The owner's ``EventSink``: local sessions at once, other workers through Redis."""

    def __init__(self, bus: RedisBus | None, deliver_local: Callable[[RoomEvent], None]) -> None:
        self.bus = bus  # None with one worker
        self._local = deliver_local

    def publish(self, event: RoomEvent) -> None:
        # Other workers first: their share of a big fan-out runs while this one writes its own.
        if self.bus is not None:
            self.bus.publish_event(event)
        self._local(event)


class RedisBus(BusClient):
    """Implements ``RemoteOwners`` and carries events; reconnects by itself (BusClient)."""

    def __init__(
        self,
        url: str,
        me: int,
        shard_map: ShardMap,
        metrics: Metrics,
        connect: Connect,
    ) -> None:
        super().__init__(url, me, shard_map, metrics, connect)
        # What the bus serves, given by start(): the owner and the gateway are built on
        # the bus (they publish and watch through it), so they come after it.
        self._owner: RoomOwner
        self._gateway: Gateway
        self._ownership: Ownership
        self._serving_shards: set[int] = set()  # owner channels subscribed (leases held)
        self.on_control: Callable[[], None] = lambda: None  # wakes the shard keeper
        self._serving = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._rooms: dict[str, asyncio.Future[None]] = {}  # room channels: subscribed or pending
        self._rejoiner: Rejoiner | None = None  # made in start(), with the gateway

    async def start(
        self, owner: RoomOwner, gateway: Gateway, ownership: Ownership, timeout_s: float = 10.0
    ) -> None:
        """Connects, then serves ``owner``'s rooms (of the shards ``ownership`` holds) to
        other workers and brings room events to ``gateway``."""
        self._owner = owner
        self._gateway = gateway
        self._ownership = ownership
        self._rejoiner = Rejoiner(self._rejoin, self._still_in)
        await self._open(timeout_s)

    async def stop(self) -> None:
        if self._rejoiner is not None:
            await self._rejoiner.stop()
        await super().stop()

    # -- connection keeping (BusClient keeps the link and the reply channel) ------------------

    async def _connected(self, link: BusLink) -> None:
        await link.subscribe(wire.CONTROL_CHANNEL)
        rooms = [wire.room_channel(r) for r in self._rooms]
        rooms += [wire.owner_channel(k) for k in self._serving_shards]
        if rooms:
            await link.subscribe(*rooms)
        # Others forget what this worker told them and say so (Forgot, with the shards they
        # serve); on each Forgot this worker re-announces its sessions there (_on_control),
        # and each re-join's answer fills what its rooms missed while the link was down
        # (RoomFeeds.start).
        await link.publish(wire.CONTROL_CHANNEL, wire.encoder.encode(wire.Announce(self._me)))
        if self._serving_shards:
            # Shards taken while the link was down were announced to nobody (nor to this
            # worker's own gateway), and others that were down missed an Acquired: say again
            # what this worker serves, so every gateway re-announces its sessions here.
            acquired = wire.Acquired(self._me, sorted(self._serving_shards))
            await link.publish(wire.CONTROL_CHANNEL, wire.encoder.encode(acquired))
        log.info("worker %d on the Redis bus", self._me)

    # -- room channels ----------------------------------------------------------------------

    async def watch_room(self, room_id: str) -> None:
        """Subscribes to a remote room's events (once) before its join is sent."""
        pending = self._rooms.get(room_id)
        if pending is None:
            pending = asyncio.ensure_future(self._subscribe_room(room_id))
            self._rooms[room_id] = pending
        try:
            await asyncio.shield(pending)
        except (TimeoutError, RespError) as exc:
            self._rooms.pop(room_id, None)
            raise Overloaded("cannot follow the room right now") from exc

    async def _subscribe_room(self, room_id: str) -> None:
        if self._link is None:
            raise RespError("Redis connection is down")
        await self._link.subscribe(wire.room_channel(room_id))

    def unwatch_room(self, room_id: str) -> None:
        if self._rooms.pop(room_id, None) is not None and self._link is not None:
            self._link.unsubscribe(wire.room_channel(room_id))

    def publish_event(self, event: RoomEvent) -> None:
        if self._link is None:
            return  # Redis is down: remote gateways fill the gap from the store later
        started = time.perf_counter()
        # now: out at once, not after this turn's local deliveries
        future = self._link.publish(
            wire.room_channel(event.room_id), wire.encoder.encode(event), now=True
        )
        future.add_done_callback(lambda f: self._published(f, started))

    def _published(self, future: asyncio.Future[object], started: float) -> None:
        if future.exception() is None:
            self._metrics.redis_published(time.perf_counter() - started)

    # -- shards served here (the keeper's leases) --------------------------------------------

    async def serve_shards(self, shards: list[int]) -> None:
        """Subscribes to the shards' request channels (a lease was just taken)."""
        self._serving_shards.update(shards)
        if self._link is not None:
            await self._link.subscribe(*(wire.owner_channel(k) for k in shards))

    def stop_serving(self, shards: list[int]) -> None:
        self._serving_shards.difference_update(shards)
        if self._link is not None:
            self._link.unsubscribe(*(wire.owner_channel(k) for k in shards))

    async def announce(self, message: wire.Control) -> None:
        if self._link is not None:
            await self._link.publish(wire.CONTROL_CHANNEL, wire.encoder.encode(message))

    async def join(self, room_id: str, who: Participant, quiet: bool = False) -> JoinResult:
        await self.watch_room(room_id)
        result = await self._request(room_id, wire.JoinReq(room_id, who, quiet))
        assert isinstance(result, JoinResult)
        self._gateway.joined_remote(room_id, result.last_seq)
        return result

    async def part(self, room_id: str, session: str) -> None:
        await self._request(room_id, wire.PartReq(room_id, session))

    async def history(
        self, room_id: str, user: str, query: HistoryQuery, session: str = ""
    ) -> list[MessageRecord]:
        result = await self._request(room_id, wire.HistoryReq(room_id, user, query, session))
        assert isinstance(result, wire.HistoryResult)
        return result.messages

    # -- incoming -------------------------------------------------------------------------------

    def _on_message(self, channel: bytes, data: bytes) -> None:
        try:
            if channel.startswith(wire.ROOM_PREFIX):
                self._gateway.on_remote_event(wire.event_decoder.decode(data))
            elif channel == self._reply:
                self._on_reply(data)
            elif channel.startswith(wire.OWNER_PREFIX):
                self._serve(wire.request_decoder.decode(data))
            elif channel == wire.CONTROL_CHANNEL:
                self._on_control(wire.control_decoder.decode(data))
        except Exception:  # one bad message must not stop the subscription
            log.exception("dropped a malformed bus message on %r", channel)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _serve(self, request: wire.Request) -> None:
        if self._serving >= MAX_SERVING:
            self._metrics.rejected("owner")
            self._answer(request, wire.Reply(request.id, 503, "room owner busy"))
            return
        self._serving += 1
        # Started in arrival order: a post takes its seq before the task first suspends.
        self._spawn(self._serve_one(request))

    async def _serve_one(self, request: wire.Request) -> None:
        op = request.op
        try:
            result: wire.Result
            if not self._ownership.owns(self._map.shard(op.room_id)):
                raise Overloaded("this worker does not serve the room's shard now; retry")
            if isinstance(op, wire.PostReq):
                result = await self._owner.append_post(
                    op.room_id, op.session, op.user, op.client_key, op.text
                )
            elif isinstance(op, wire.JoinReq):
                result = await self._owner.join(op.room_id, op.who, quiet=op.quiet)
            elif isinstance(op, wire.PartReq):
                await self._owner.part(op.room_id, op.session)
                result = None
            else:
                messages = await self._owner.history(op.room_id, op.user, op.query, op.session)
                result = wire.HistoryResult(messages)
            reply = wire.Reply(request.id, 0, "", result)
        except PchatError as exc:
            reply = wire.Reply(request.id, exc.xccos_code, str(exc))
        except Exception:
            log.exception("owner request %s failed", type(op).__name__)
            reply = wire.Reply(request.id, 500, "internal error")
        finally:
            self._serving -= 1
        self._answer(request, reply)

    def _answer(self, request: wire.Request, reply: wire.Reply) -> None:
        if self._link is not None:
            future = self._link.publish(
                wire.reply_channel(request.reply_to), wire.encoder.encode(reply)
            )
            future.add_done_callback(lambda f: f.exception())

    def _on_control(self, message: wire.Control) -> None:
        if isinstance(message, wire.Announce):
            self._on_announce(message.worker)
        elif isinstance(message, wire.Forgot):
            if message.worker == self._me:  # an owner dropped this worker's sessions
                served = set(message.shards)
                self._rejoin_all(self._gateway.rejoin_targets(served.__contains__))
            return
        elif isinstance(message, wire.Acquired):
            # A new owner (maybe this worker) starts with empty rosters: tell it who is in.
            taken = set(message.shards)
            self._rejoin_all(self._gateway.rejoin_targets(taken.__contains__))
        if message.worker != self._me:
            self.on_control()  # a worker came, went or freed shards: the keeper looks now

    def _on_announce(self, worker: int) -> None:
        """A worker came (back) onto the bus with empty memory of the others: forget its
        sessions here, then say so (Forgot) so that it re-announces them. The answer, not
        its own Announce, starts its re-joins: on a Redis Cluster the control channel and
        a shard's request channel live on different nodes, so a re-join sent on the
        Announce alone could arrive before the Announce and be dropped with the rest.
        Each owner's Forgot names the shards it serves, so the worker re-announces each of
        its sessions once, to the owner that forgot it."""
        if worker == self._me:
            return
        self._owner.drop_gateway(worker)
        if self._link is not None:
            forgot = wire.Forgot(self._me, worker, sorted(self._serving_shards))
            data = wire.encoder.encode(forgot)
            self._link.publish(wire.CONTROL_CHANNEL, data).add_done_callback(
                lambda f: f.cancelled() or f.exception()
            )

    def _rejoin_all(self, targets: list[tuple[str, Participant]]) -> None:
        if self._rejoiner is not None and targets:
            self._rejoiner.add(targets)

    def _still_in(self, room_id: str, session: str) -> bool:
        return self._gateway.has_member(room_id, session)

    async def _rejoin(self, room_id: str, who: Participant) -> None:
        if self._ownership.owns(self._map.shard(room_id)):
            await self._owner.join(room_id, who, quiet=True)
        else:
            await self.join(room_id, who, quiet=True)
