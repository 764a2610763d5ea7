"""The rooms this worker's sessions are in: who is where, and room events delivered to them.

Built before the room owner (whose events it delivers) and the gateway (whose sessions
it indexes): it needs only the store (gap fills), the metrics and, with many workers,
the bus to watch other workers' rooms.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from core.config import Settings
from core.errors import PchatError
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
from core.xccos.ids import room_uri, ts_iso
from shards.metrics import Metrics
from shards.routing import Ownership, ShardMap
from shards.worker.delivery import DeliveryQueue
from shards.worker.feed import RoomFeeds
from shards.worker.newcontent import NewContentNotices
from shards.worker.output import PendingOutput
from shards.worker.session import Session

log = logging.getLogger(__name__)


class RoomWatcher(Protocol):
    """Subscriptions to the events of rooms other workers own (the Redis bus)."""

    async def watch_room(self, room_id: str) -> None: ...
    def unwatch_room(self, room_id: str) -> None: ...


class LocalRooms:
    """Room id -> local sessions (joined or following); each event encoded once per room
    and handed to the sliced ``DeliveryQueue`` (HS-10, ARCHITECTURE §8a)."""

    def __init__(
        self,
        settings: Settings,
        worker_id: int,
        store: ChatStore,
        shard_map: ShardMap,
        ownership: Ownership,
        metrics: Metrics,
        watcher: RoomWatcher | None,
        output: PendingOutput,
    ) -> None:
        self._domain = settings.domain
        self._me = worker_id  # the pool-wide node id
        self._map = shard_map
        self._ownership = ownership
        self._metrics = metrics
        self._watcher = watcher  # None with one worker: every room is local
        self.feeds = RoomFeeds(store, self._deliver_fed)
        # A delivery turn's writes leave as it ends (the connections' flush): not a loop
        # turn later, after every socket's reads.
        self.deliveries = DeliveryQueue(self._delivered, self._dropped, after_turn=output.flush_all)
        self.newcontent = NewContentNotices(settings.domain, settings.limits.newcontent_interval_s)
        self.rooms: dict[str, dict[str, Session]] = {}  # room id -> session id -> session
        self.followers: dict[str, set[Session]] = {}  # room -> local sessions following it
        # The members of a room as one tuple, shared by every queued event of the room
        # until the membership changes (a 16,000-person room is not copied per post).
        self._member_tuples: dict[str, tuple[Session, ...]] = {}
        self._envids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    def next_envid(self) -> int:
        """Envelope ids of what this worker sends (one counter for rooms and sessions)."""
        return next(self._envids)

    def followed(self) -> Iterator[tuple[str, list[Session]]]:
        for room_id, followers in list(self.followers.items()):
            yield room_id, list(followers)

    def attach(self, room_id: str, session: Session) -> None:
        self.rooms.setdefault(room_id, {})[session.session_id] = session
        self._member_tuples.pop(room_id, None)

    def detach(self, room_id: str, session: Session) -> None:
        members = self.rooms.get(room_id)
        if members is not None:
            members.pop(session.session_id, None)
            self._member_tuples.pop(room_id, None)
            if not members:
                del self.rooms[room_id]
                self.feeds.drop(room_id)
                self._maybe_unwatch(room_id)

    def _maybe_unwatch(self, room_id: str) -> None:
        watcher = self._watcher
        if watcher is not None and room_id not in self.rooms and room_id not in self.followers:
            watcher.unwatch_room(room_id)

    def add_follower(self, room_id: str, session: Session) -> None:
        self.followers.setdefault(room_id, set()).add(session)
        watcher = self._watcher
        # Watched even while the room is served here: its shard may move to another worker.
        if watcher is not None:
            task = asyncio.get_running_loop().create_task(self._watch_followed(watcher, room_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _watch_followed(self, watcher: RoomWatcher, room_id: str) -> None:
        try:
            await watcher.watch_room(room_id)
        except PchatError as exc:  # Redis is down: the bus re-subscribes when it is back
            log.info("cannot follow room %s now: %s", room_id, exc)

    def remove_follower(self, room_id: str, session: Session) -> None:
        followers = self.followers.get(room_id)
        if followers is not None:
            followers.discard(session)
            if not followers:
                del self.followers[room_id]
                self._maybe_unwatch(room_id)

    def _new_content(self, event: PostEvent) -> None:
        for session in list(self.followers.get(event.room_id, ())):
            self.newcontent.on_post(session, event.room_id, event.seq)

    # -- the Redis bus side (many workers) ----------------------------------------------------

    def owns(self, room_id: str) -> bool:
        return self._ownership.owns(self._map.shard(room_id))

    def on_remote_event(self, event: RoomEvent) -> None:
        """An event of a room another worker owns: posts go through the ordering feed."""
        if self.owns(room_id := event.room_id):
            # This worker's own publication coming back, or the last words of the room's
            # previous owner: delivered already, or (a post) ordered by the room's feed.
            if isinstance(event, PostEvent) and room_id in self.rooms and self.feeds.has(room_id):
                self.feeds.on_post(event)
            return
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

    def rejoin_targets(self, wanted: Callable[[int], bool]) -> list[tuple[str, Participant]]:
        """Local sessions in rooms of the wanted shards, to re-announce to a new owner."""
        shard = self._map.shard
        return [
            (room_id, Participant(sid, session.user, self._me))
            for room_id, members in self.rooms.items()
            if wanted(shard(room_id))
            for sid, session in members.items()
            if room_id in session.joined()
        ]

    def has_member(self, room_id: str, session: str) -> bool:
        """Whether a local session is (still) in the room: a re-join of one that left is
        not sent."""
        member = self.rooms.get(room_id, {}).get(session)
        return member is not None and room_id in member.joined()

    def on_event(self, event: RoomEvent) -> None:
        """A room event for the local sessions: queued for sliced delivery, in room order."""
        if isinstance(event, PostEvent) and event.room_id in self.followers:
            self._new_content(event)
        if event.room_id not in self.rooms:
            return
        if isinstance(event, PostEvent):
            if self.feeds.has(event.room_id):
                # The room was served elsewhere when its sessions here joined: its posts
                # keep going through the feed, which fills what a dead owner never sent.
                self.feeds.on_post(event)
            else:
                self._deliver_post(event)
        elif isinstance(event, JoinEvent):
            data = build.uib(
                event.user,
                inner=build.aib("3984", event.room_id, domain=self._domain),
            )
            body = build.envelope(self.next_envid(), build.ntc("ntc:join", data))
            self._push(event.room_id, body, skip=event.session)
        elif isinstance(event, PartEvent):
            uri = room_uri(self._domain, event.room_id)
            data = build.chanib(uri, inner=build.uib(event.user))
            body = build.envelope(self.next_envid(), build.ntc("ntc:part", data))
            self._push(event.room_id, body, skip=event.session)
        elif isinstance(event, KickEvent):
            # After the room's earlier events, so the kicked hear everything sent before.
            self.deliveries.push(event.room_id, b"", (), then=lambda: self._kick(event))

    def _members(self, room_id: str) -> tuple[Session, ...]:
        members = self._member_tuples.get(room_id)
        if members is None:
            members = self._member_tuples[room_id] = tuple(self.rooms.get(room_id, {}).values())
        return members

    def _push(self, room_id: str, body: bytes, *, skip: str = "", sent_ms: int = 0) -> None:
        self.deliveries.push(room_id, body, self._members(room_id), skip=skip, sent_ms=sent_ms)

    def _delivered(self, count: int, sent_ms: int) -> None:
        self._metrics.delivered(count, time.time() - sent_ms / 1000)

    def _dropped(self, room_id: str) -> None:
        self._metrics.rejected("delivery")
        log.warning("room %s: delivery backlog full, an event was dropped", room_id)

    def _deliver_fed(self, event: PostEvent) -> None:
        if event.room_id in self.rooms:
            self._deliver_post(event)

    def _deliver_post(self, event: PostEvent) -> None:
        uri = room_uri(self._domain, event.room_id)
        post = build.grpchat(uri, event.author, ts_iso(event.ts_ms), event.seq, event.text)
        body = build.envelope(self.next_envid(), post)
        self._push(event.room_id, body, skip=event.origin, sent_ms=event.sent_ms)

    def _kick(self, event: KickEvent) -> None:
        members = self.rooms.get(event.room_id, {})
        uri = room_uri(self._domain, event.room_id)
        for sid in event.sessions:
            session = members.get(sid)
            if session is None:
                continue
            data = build.chanib(uri, inner=build.uib(session.user))
            session.deliver(
                event.room_id, build.envelope(self.next_envid(), build.ntc("ntc:part", data))
            )
            session.left(event.room_id)
