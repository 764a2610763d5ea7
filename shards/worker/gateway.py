"""Gateway: the sessions this worker holds, admission, and delivery of room events to them."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from core.config import Settings
from core.errors import PchatError
from core.rooms import rules
from core.rooms.events import (
    JoinEvent,
    KickEvent,
    PartEvent,
    Participant,
    PostEvent,
    RoomEvent,
)
from core.store.base import ChatStore
from core.xccos import build
from core.xccos.commands import CommandHandler, RoomAccess
from core.xccos.ids import room_uri, ts_iso
from shards.metrics import Metrics
from shards.routing import ShardMap
from shards.worker.feed import RoomFeeds
from shards.worker.newcontent import NewContentNotices

if TYPE_CHECKING:
    from shards.bus import RedisBus
    from shards.worker.connection import SipConnection
    from shards.worker.session import Session

log = logging.getLogger(__name__)


class Gateway:
    """Owns the local sessions; turns each room event into SIP INFOs for them.

    A post is encoded once per event (one envelope, one body) and that body is framed
    per dialog (HS-10); the gateway's own envid counter numbers the envelopes.
    """

    def __init__(
        self,
        settings: Settings,
        worker_id: int,
        store: ChatStore,
        handler: CommandHandler,
        router: RoomAccess,
        shard_map: ShardMap,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.store = store
        self.handler = handler
        self.router = router
        self.shard_map = shard_map
        self.bus: RedisBus | None = None
        self.feeds = RoomFeeds(store, self._deliver_fed)
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections: set[SipConnection] = set()
        self._dirty: list[SipConnection] = []  # written to in this loop turn
        self._flush_scheduled = False
        self.followers: dict[str, set[Session]] = {}  # room -> local sessions following it
        self.newcontent = NewContentNotices(settings.domain, settings.limits.newcontent_interval_s)
        self.metrics = metrics
        self.inflight = 0  # INFOs accepted (200 sent) whose replies are not yet out
        self.admission_cap = settings.limits.admission_queue
        self.rooms: dict[str, dict[str, Session]] = {}  # room id -> session id -> session
        self.sessions: dict[str, Session] = {}
        self.by_user: dict[str, set[Session]] = {}  # a user's devices signed in here
        self._envids = itertools.count(1)
        self._session_ids = itertools.count(1)

    def want_flush(self, conn: SipConnection) -> None:
        """One callback per loop turn flushes every connection written to in it, instead
        of one callback per connection (a 200-recipient post touches 200 connections)."""
        self._dirty.append(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_all)

    def _flush_all(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    def new_session_id(self) -> str:
        return f"{self.worker_id}.{next(self._session_ids)}"

    def next_envid(self) -> int:
        return next(self._envids)

    def admit(self) -> bool:
        """Takes a place in the admission queue; False when full (the caller answers 503)."""
        if self.inflight >= self.admission_cap:
            self.metrics.rejected("admission")
            return False
        self.inflight += 1
        return True

    def release(self) -> None:
        self.inflight -= 1

    def add_session(self, session: Session) -> None:
        self.sessions[session.session_id] = session
        self.by_user.setdefault(session.user, set()).add(session)
        self.metrics.sessions.inc()

    def remove_session(self, session: Session) -> None:
        if self.sessions.pop(session.session_id, None) is not None:
            devices = self.by_user.get(session.user)
            if devices is not None:
                devices.discard(session)
                if not devices:
                    del self.by_user[session.user]
            self.metrics.sessions.dec()

    def sessions_of(self, user: str) -> list[Session]:
        return list(self.by_user.get(user, ()))

    def attach(self, room_id: str, session: Session) -> None:
        self.rooms.setdefault(room_id, {})[session.session_id] = session

    def detach(self, room_id: str, session: Session) -> None:
        members = self.rooms.get(room_id)
        if members is not None:
            members.pop(session.session_id, None)
            if not members:
                del self.rooms[room_id]
                self.feeds.drop(room_id)
                self._maybe_unwatch(room_id)

    def _maybe_unwatch(self, room_id: str) -> None:
        if self.bus is not None and room_id not in self.rooms and room_id not in self.followers:
            self.bus.unwatch_room(room_id)

    def add_follower(self, room_id: str, session: Session) -> None:
        self.followers.setdefault(room_id, set()).add(session)
        bus = self.bus
        if bus is not None and self.shard_map.owner_of(room_id) != self.worker_id:
            task = asyncio.get_running_loop().create_task(self._watch_followed(bus, room_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _watch_followed(self, bus: RedisBus, room_id: str) -> None:
        try:
            await bus.watch_room(room_id)
        except PchatError as exc:  # Redis is down: the bus re-subscribes when it is back
            log.info("cannot follow room %s now: %s", room_id, exc)

    def remove_follower(self, room_id: str, session: Session) -> None:
        followers = self.followers.get(room_id)
        if followers is not None:
            followers.discard(session)
            if not followers:
                del self.followers[room_id]
                self._maybe_unwatch(room_id)

    def load_follows(self, session: Session) -> None:
        """A new session follows what its user follows (kept in the store, per user)."""
        task = asyncio.get_running_loop().create_task(self._load_follows(session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load_follows(self, session: Session) -> None:
        try:
            rooms = await self.store.followed(session.user)
        except PchatError as exc:
            log.warning("followed rooms of %s not loaded: %s", session.user, exc)
            return
        for room_id in rooms:
            if await self.may_read(room_id, session.user):  # follows outlive permissions
                session.follow(room_id, True)

    async def may_read(self, room_id: str, user: str) -> bool:
        room = await self.store.get_room(room_id)
        category = await self.handler.directory.category(room.category_id) if room else None
        return room is not None and category is not None and rules.can_read(room, category, user)

    async def recheck_follows(self) -> None:
        """Rules changed: sessions stop hearing of rooms they may no longer read."""
        for room_id, followers in list(self.followers.items()):
            for session in list(followers):
                if not await self.may_read(room_id, session.user):
                    session.follow(room_id, False)

    def _new_content(self, event: PostEvent) -> None:
        for session in list(self.followers.get(event.room_id, ())):
            self.newcontent.on_post(session, event.room_id, event.seq)

    # -- the Redis bus side (many workers) ----------------------------------------------------

    def on_remote_event(self, event: RoomEvent) -> None:
        """An event of a room another worker owns: posts go through the ordering feed."""
        if isinstance(event, PostEvent):
            if event.room_id in self.rooms:
                self.feeds.on_post(event)
            if event.room_id in self.followers:
                self._new_content(event)
        else:
            self.on_event(event)

    def joined_remote(self, room_id: str, last_seq: int) -> None:
        if room_id in self.rooms:
            self.feeds.start(room_id, last_seq)

    def rejoin_targets(self, owned_by: Callable[[int], bool]) -> list[tuple[str, Participant]]:
        """Local sessions in rooms whose owner matches, to re-announce after a restart."""
        owner_of = self.shard_map.owner_of
        return [
            (room_id, Participant(sid, session.user, self.worker_id))
            for room_id, members in self.rooms.items()
            if owned_by(owner_of(room_id))
            for sid, session in members.items()
            if room_id in session.joined()
        ]

    def leave_rooms(self, session_id: str, rooms: list[str]) -> None:
        """Tells the rooms' owners that a closed session left (in the background)."""
        task = asyncio.get_running_loop().create_task(self._leave(session_id, rooms))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def finish_leaving(self, timeout_s: float) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)

    async def _leave(self, session_id: str, rooms: list[str]) -> None:
        for room_id in rooms:
            try:
                await self.router.part(room_id, session_id)
            except PchatError as exc:  # the owner is gone: its restart drops the session anyway
                log.info("part of %s from %s not delivered: %s", session_id, room_id, exc)

    def on_event(self, event: RoomEvent) -> None:
        if isinstance(event, PostEvent) and event.room_id in self.followers:
            self._new_content(event)
        members = self.rooms.get(event.room_id)
        if not members:
            return
        if isinstance(event, PostEvent):
            self._deliver_post(event, members)
        elif isinstance(event, JoinEvent):
            data = build.uib(
                event.user,
                inner=build.aib("3984", event.room_id, domain=self.settings.domain),
            )
            body = build.envelope(self.next_envid(), build.ntc("ntc:join", data))
            for sid, session in list(members.items()):
                if sid != event.session:
                    session.deliver(event.room_id, body)
        elif isinstance(event, PartEvent):
            uri = room_uri(self.settings.domain, event.room_id)
            data = build.chanib(uri, inner=build.uib(event.user))
            body = build.envelope(self.next_envid(), build.ntc("ntc:part", data))
            for sid, session in list(members.items()):
                if sid != event.session:
                    session.deliver(event.room_id, body)
        elif isinstance(event, KickEvent):
            self._kick(event, members)

    def _deliver_fed(self, event: PostEvent) -> None:
        members = self.rooms.get(event.room_id)
        if members:
            self._deliver_post(event, members)

    def _deliver_post(self, event: PostEvent, members: dict[str, Session]) -> None:
        uri = room_uri(self.settings.domain, event.room_id)
        post = build.grpchat(uri, event.author, ts_iso(event.ts_ms), event.seq, event.text)
        body = build.envelope(self.next_envid(), post)
        delivered = 0
        for sid, session in list(members.items()):
            if sid != event.origin:
                session.deliver(event.room_id, body)
                delivered += 1
        if delivered:
            self.metrics.delivered(delivered, time.time() - event.sent_ms / 1000)

    def _kick(self, event: KickEvent, members: dict[str, Session]) -> None:
        uri = room_uri(self.settings.domain, event.room_id)
        for sid in event.sessions:
            session = members.get(sid)
            if session is None:
                continue
            data = build.chanib(uri, inner=build.uib(session.user))
            session.deliver(
                event.room_id, build.envelope(self.next_envid(), build.ntc("ntc:part", data))
            )
            session.left(event.room_id)
