"""Room owner: the single writer of its rooms' hot state (roster, seq, recent ring, dedup)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

import msgspec

from core.compliance.events import Activity, Kind, chat_event, to_outbox
from core.errors import BadRequest, Forbidden, NotFound, Overloaded, TooLarge
from core.rooms import rules
from core.rooms.events import (
    HistoryQuery,
    JoinEvent,
    KickEvent,
    PartEvent,
    Participant,
    PostEvent,
    RoomEvent,
)
from core.rooms.grace import RejoinGrace
from core.rooms.state import RETRY_WINDOW_MS, Pending, RoomState, read_room_state
from core.rooms.state import PostResult as PostResult  # the owner's answer to a post
from core.store.base import (
    CategoryRecord,
    ChatStore,
    MessageRecord,
    NewMessage,
    OutboxEvent,
    RoomRecord,
)
from core.store.batch import GroupCommitter

log = logging.getLogger(__name__)

# The session of a file post (shards/web/files.py): the file service posts for the
# uploader, who need not have joined; the post is checked, ordered, stored and fanned out
# like any other. Gateway session ids are "<worker>.<n>", so this never names one.
FILE_POSTER = "files"


class EventSink(Protocol):
    def publish(self, event: RoomEvent) -> None: ...


# A room's fencing token: (shard, epoch) of the lease this worker serves it under. It
# raises Overloaded when the room's shard is not served here (any more).
Fence = Callable[[str], tuple[int, int]]


def unfenced(room_id: str) -> tuple[int, int]:
    return -1, 0  # one worker, no leases: every room is this worker's


class OwnerSettings(msgspec.Struct, frozen=True, kw_only=True):
    ring_size: int = 200
    message_size_limit: int = 8000
    participant_update_limit: int = 75
    # How long after ``drop_gateway`` that gateway's sessions get 503 rather than 403 for
    # a post (core/rooms/grace.py); 0 = never (one host: a dropped gateway is a worker
    # that restarted, and its sessions went with it).
    gateway_grace_s: float = 0.0


class JoinResult(msgspec.Struct, frozen=True, tag=True):
    room: RoomRecord
    category: CategoryRecord
    users: list[str]  # distinct users online, empty above the participant update limit
    managers: list[str]
    ucnt: int
    last_seq: int = 0  # the room's newest msgid when the session joined


class RoomOwner:
    """Serves the rooms of the shards a worker owns; gateways reach it through the bus."""

    def __init__(
        self,
        store: ChatStore,
        committer: GroupCommitter[NewMessage],
        sink: EventSink,
        settings: OwnerSettings,
        clock: Callable[[], float] = time.time,
        recorder: GroupCommitter[OutboxEvent] | None = None,
        fence: Fence = unfenced,
    ) -> None:
        self._store = store
        self._fence = fence
        self._committer = committer
        # Compliance: JOIN, PART, BACKCHAT (and posts of rooms without history) are written
        # here before they take effect; posts carry theirs in their own transaction.
        self._recorder = recorder
        self._sink = sink
        self._settings = settings
        self._clock = clock
        self._grace = RejoinGrace(clock, settings.gateway_grace_s)
        self._rooms: dict[str, RoomState] = {}
        self._loading: dict[str, asyncio.Future[RoomState | None]] = {}

    @property
    def active_rooms(self) -> int:
        return sum(1 for state in self._rooms.values() if len(state.roster))

    def online_count(self, room_id: str) -> int:
        state = self._rooms.get(room_id)
        return state.roster.user_count if state else 0

    async def _room(self, room_id: str) -> RoomState | None:
        state = self._rooms.get(room_id)
        if state is not None:
            return state
        loading = self._loading.get(room_id)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[RoomState | None] = asyncio.get_running_loop().create_future()
        self._loading[room_id] = future
        try:
            state = await self._load(room_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here; waiters re-raise their own copy
            raise
        finally:
            del self._loading[room_id]
        if state is not None:
            self._rooms[room_id] = state
        future.set_result(state)
        return state

    async def _load(self, room_id: str) -> RoomState | None:
        """Read after the shard's epoch was claimed, so it sees every write of the owners
        before; a state loaded across a loss of the shard is not kept."""
        token = self._fence(room_id)
        state = await read_room_state(
            self._store, room_id, token, self._settings.ring_size, self._clock
        )
        if self._fence(room_id) != token:
            raise Overloaded("the room moved to another worker while loading; retry")
        return state

    async def _readable(self, room_id: str, user: str) -> RoomState:
        """The room if the user may read it; 404 when it may not even know it exists."""
        state = await self._room(room_id)
        if state is None or not rules.can_see(state.record, state.category, user):
            raise NotFound("no such room")
        if not rules.can_read(state.record, state.category, user):
            raise Forbidden("not a member of this room")
        return state

    async def join(self, room_id: str, who: Participant, *, quiet: bool = False) -> JoinResult:
        """Adds the session to the roster; ``quiet`` (a gateway re-announcing its sessions
        after a restart) sends no ntc:join."""
        state = await self._readable(room_id, who.user)
        if self._recorder is not None and not quiet and who.session not in state.roster:
            await self._record("JOIN", state, who.user, who.session)
        new_user = state.roster.add(who)
        ucnt = state.roster.user_count
        small = ucnt <= self._settings.participant_update_limit
        if new_user and small and not quiet:
            self._sink.publish(JoinEvent(room_id, who.user, who.session, who.gateway, ucnt))
        users = state.roster.users() if small else []
        managers = [u for u in users if rules.is_manager(state.record, u)]
        return JoinResult(state.record, state.category, users, managers, ucnt, state.committed_seq)

    async def part(self, room_id: str, session: str) -> None:
        state = self._rooms.get(room_id)
        if state is None:
            return
        who, user_left = state.roster.remove(session)
        if who is not None and self._recorder is not None:
            await self._record("PART", state, who.user, session)
        ucnt = state.roster.user_count
        if who is not None and user_left and ucnt < self._settings.participant_update_limit:
            self._sink.publish(PartEvent(room_id, who.user, session, who.gateway, ucnt))

    def drop_shards(self, shards: set[int]) -> None:
        """This worker no longer serves these shards: their rooms' hot state goes (the new
        owner loads it from the store; gateways re-announce their sessions there)."""
        for room_id, state in list(self._rooms.items()):
            if state.shard in shards:
                del self._rooms[room_id]

    def drop_gateway(self, gateway: int) -> None:
        """A gateway restarted or lost touch: its sessions leave every roster silently
        (it re-announces those still alive with quiet joins; meanwhile their posts get
        503, not 403)."""
        self._grace.gateway_dropped(gateway)
        for state in self._rooms.values():
            for who in state.roster:
                if who.gateway == gateway:
                    state.roster.remove(who.session)
                    self._record_later("PART", state, who.user, who.session)

    async def append_post(
        self, room_id: str, session: str, user: str, client_key: str, text: str
    ) -> PostResult:
        """Assigns the post its seq, hands it to the group commit and returns once it is
        durable (invariant 1). The seq is taken before the first suspension, so posts of
        one session started in order are numbered in order."""
        return await asyncio.shield(self._accept(room_id, session, user, client_key, text))

    def _accept(
        self, room_id: str, session: str, user: str, client_key: str, text: str
    ) -> asyncio.Future[PostResult]:
        state = self._rooms.get(room_id)
        if state is None:
            return asyncio.ensure_future(
                self._accept_loading(room_id, session, user, client_key, text)
            )
        return self._accept_in(state, session, user, client_key, text)

    async def _accept_loading(
        self, room_id: str, session: str, user: str, client_key: str, text: str
    ) -> PostResult:
        state = await self._room(room_id)
        if state is None:
            raise NotFound("no such room")
        return await self._accept_in(state, session, user, client_key, text)

    def _accept_in(
        self, state: RoomState, session: str, user: str, client_key: str, text: str
    ) -> asyncio.Future[PostResult]:
        if not rules.can_see(state.record, state.category, user):
            raise NotFound("no such room")
        if session not in state.roster and session != FILE_POSTER:
            # Leased (shard >= 0): other gateways may still be re-announcing their sessions.
            raise self._grace.non_member(session, state.loaded_s, leased=state.shard >= 0)
        if not rules.can_post(state.record, state.category, user):
            raise Forbidden("you may not post in this room")
        if not text.strip():
            raise BadRequest("empty post")
        if len(text) > self._settings.message_size_limit:
            raise TooLarge("post over messageSizeLimit")
        now_ms = int(self._clock() * 1000)
        key = (user, client_key)
        if client_key:
            earlier = state.retries.get(key)
            if earlier is not None and now_ms - earlier.ts_ms < RETRY_WINDOW_MS:
                return earlier.future
        future: asyncio.Future[PostResult] = asyncio.get_running_loop().create_future()
        message = NewMessage(
            room_id=state.record.id,
            seq=state.next_seq,
            author=user,
            ts_ms=now_ms,
            text=text,
            client_key=client_key,
            session=session,
            shard=state.shard,
            epoch=state.epoch,
        )
        if not state.category.history:
            state.next_seq += 1  # taken now: the task below may run after the next post
            return asyncio.ensure_future(self._unlogged(state, message, future))
        self._committer.submit(
            message, lambda error: self._committed(state, message, session, future, error)
        )
        state.next_seq += 1
        if client_key:
            state.remember(key, Pending(message.seq, now_ms, future))
        return future

    async def _unlogged(
        self, state: RoomState, message: NewMessage, future: asyncio.Future[PostResult]
    ) -> PostResult:
        """History off in the category: the post is delivered and forgotten (never stored);
        only the compliance archive, when on, keeps it (recorded before the reply)."""
        if self._recorder is not None:
            await self._recorder.write(self._fenced(state, chat_event(message)))
        seq, now_ms = message.seq, message.ts_ms
        state.committed_seq = seq
        future.set_result(PostResult(seq, now_ms))
        if message.client_key:
            key = (message.author, message.client_key)
            state.remember(key, Pending(seq, now_ms, future))
        event = PostEvent(
            state.record.id, seq, message.author, now_ms, message.text, message.session, now_ms
        )
        self._sink.publish(event)
        return await future

    def _committed(
        self,
        state: RoomState,
        message: NewMessage,
        session: str,
        future: asyncio.Future[PostResult],
        error: BaseException | None,
    ) -> None:
        if error is not None:
            # The seq stays unused (msgids are increasing, not dense); a retry gets a new one.
            key = (message.author, message.client_key)
            if message.client_key and state.retries.get(key, None) is not None:
                del state.retries[key]
            if not future.done():
                future.set_exception(Overloaded("the chat store failed; retry"))
            return
        record = MessageRecord(
            room_id=message.room_id,
            seq=message.seq,
            author=message.author,
            ts_ms=message.ts_ms,
            text=message.text,
        )
        state.committed(record)
        if not future.done():
            future.set_result(PostResult(message.seq, message.ts_ms))
        self._sink.publish(
            PostEvent(
                message.room_id,
                message.seq,
                message.author,
                message.ts_ms,
                message.text,
                session,
                message.ts_ms,
            )
        )

    async def history(
        self, room_id: str, user: str, query: HistoryQuery, session: str = ""
    ) -> list[MessageRecord]:
        state = await self._readable(room_id, user)
        if self._recorder is not None:
            detail = f"{query.kind} {query.count}" + (f" {query.seq}" if query.seq else "")
            await self._record("BACKCHAT", state, user, session, query.text or detail)
        ring = state.ring
        if query.kind == "last" and (len(ring) >= query.count or state.ring_complete):
            return list(ring)[-query.count :] if query.count else []
        if query.kind == "after" and ring and (state.ring_complete or ring[0].seq <= query.seq + 1):
            return [m for m in ring if m.seq > query.seq][: query.count]
        if query.kind == "last":
            return await self._store.history_last(room_id, query.count)
        if query.kind == "before":
            return await self._store.history_before(room_id, query.seq, query.count)
        if query.kind == "after":
            return await self._store.history_after(room_id, query.seq, query.count)
        return await self._store.history_search(room_id, query.text, query.count)

    async def refresh(self) -> None:
        """Re-reads the rules of loaded rooms (an admin changed something); removes at once
        every session that may no longer read its room."""
        for room_id, state in list(self._rooms.items()):
            record = await self._store.get_room(room_id)
            category = await self._store.get_category(record.category_id) if record else None
            if record is None or category is None:
                self._kick(state, [p.session for p in state.roster])
                del self._rooms[room_id]
                continue
            state.record, state.category = record, category
            # An admin may have removed posts: answer history from the store until new
            # posts fill the ring again (it only ever holds the newest, contiguous).
            state.ring.clear()
            state.ring_complete = False
            lost = [p.session for p in state.roster if not rules.can_read(record, category, p.user)]
            self._kick(state, lost)

    @staticmethod
    def _fenced(state: RoomState, event: OutboxEvent) -> OutboxEvent:
        return msgspec.structs.replace(event, shard=state.shard, epoch=state.epoch)

    def _activity(
        self, kind: Kind, state: RoomState, user: str, session: str, text: str
    ) -> OutboxEvent:
        now_ms = int(self._clock() * 1000)
        event = to_outbox(
            Activity(
                kind=kind,
                user=user,
                room_id=state.record.id,
                ts_ms=now_ms,
                session=session,
                text=text,
                room_name=state.record.name,
            )
        )
        return self._fenced(state, event)

    async def _record(
        self, kind: Kind, state: RoomState, user: str, session: str, text: str = ""
    ) -> None:
        """Durable before the action is acknowledged; a store failure refuses the action."""
        assert self._recorder is not None
        await self._recorder.write(self._activity(kind, state, user, session, text))

    def _record_later(self, kind: Kind, state: RoomState, user: str, session: str) -> None:
        """For departures nobody waits on (a dead gateway, a kick): queued, not awaited."""
        if self._recorder is None:
            return
        try:
            self._recorder.submit(self._activity(kind, state, user, session, ""), _ignore)
        except Overloaded:
            log.error(
                "compliance queue full: PART of %s in %s not recorded", session, state.record.id
            )

    def _kick(self, state: RoomState, sessions: list[str]) -> None:
        """Removes sessions at once: they get ntc:part for themselves (KickEvent), the
        others hear of each user that has no session left (PartEvent)."""
        if not sessions:
            return
        gone: list[Participant] = []
        for session in sessions:
            who, user_left = state.roster.remove(session)
            if who is not None:
                self._record_later("PART", state, who.user, session)
            if who is not None and user_left:
                gone.append(who)
        room_id = state.record.id
        self._sink.publish(KickEvent(room_id, sessions))
        ucnt = state.roster.user_count
        if ucnt < self._settings.participant_update_limit:
            for who in gone:
                self._sink.publish(PartEvent(room_id, who.user, who.session, who.gateway, ucnt))


def _ignore(error: BaseException | None) -> None:
    if error is not None:
        log.error("a compliance record was lost with the store: %s", error)
