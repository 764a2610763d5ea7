"""XCCOS command handlers for one signed-in session (XCCOS.md §4-§5), on typed messages.

The handler never sees SIP or sockets: the gateway hands it decoded envelope items and
sends back the reply strings it returns. Room commands go to the room's owner through
``RoomAccess`` (a direct call or a request over the bus: the handler cannot tell).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from collections.abc import Set as AbstractSet
from typing import Protocol

import msgspec

from core.auth.filetoken import FileTokens
from core.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    NotImplementedCommand,
    PchatError,
    QuotaExceeded,
    TooLarge,
)
from core.rooms import rules
from core.rooms.events import HistoryQuery, Participant
from core.rooms.management import invitations_on
from core.rooms.owner import JoinResult, PostResult
from core.sip.message import same_address
from core.store.base import (
    CategoryRecord,
    ChatStore,
    InvitationRecord,
    MessageRecord,
    RoomRecord,
    SigninRooms,
)
from core.xccos import build
from core.xccos.envelope import Command, Post
from core.xccos.history import history_page, history_query
from core.xccos.ids import parse_room_uri, room_refs, room_uri, ts_iso
from core.xccos.prefs import pref_block, pref_label, pref_update
from core.xccos.signin_view import KINDS, SigninViews
from core.xccos.xml import Element

log = logging.getLogger(__name__)


class RoomAccess(Protocol):
    """The owners of all rooms, wherever they run."""

    async def join(self, room_id: str, who: Participant) -> JoinResult: ...
    async def part(self, room_id: str, session: str) -> None: ...
    async def append_post(
        self, room_id: str, session: str, user: str, client_key: str, text: str
    ) -> PostResult: ...
    async def history(
        self, room_id: str, user: str, query: HistoryQuery, session: str = ""
    ) -> list[MessageRecord]: ...
    def online_count(self, room_id: str) -> int | None:
        """Participants online, when known without asking another worker."""


class SessionView(Protocol):
    """What a handler needs of the session it serves."""

    user: str
    session_id: str
    gateway: int
    pool_uri: str  # the URI the client INVITEd for this session; "" when none

    def begin_join(self, room_id: str) -> None:
        """Start receiving the room's events (held back until ``end_join``)."""

    def end_join(self, room_id: str, ok: bool) -> None: ...
    def left(self, room_id: str) -> None: ...
    def joined(self) -> AbstractSet[str]: ...
    def set_following(self, room_id: str, on: bool) -> None:
        """The user follows (or stops following) the room on every local device."""


class ServerInfo(msgspec.Struct, frozen=True, kw_only=True):
    domain: str
    search_limit: int
    message_size_limit: int
    story_size_limit: int
    history_max: int
    room_list_max: int = 5000  # limits.room_list_max: rooms read for an empty chansrch
    http_base: str = ""  # e.g. "http://host:8080"; "" leaves the service URLs empty
    # The file routes' base (fileServiceUrl): the file service's own when it runs
    # (shards/file_service.py), e.g. "http://host:8081"; "": http_base.
    file_base: str = ""
    # Bytes one reply may hold. Below the connection's output cap, so an honest reader
    # is never cut off as a slow consumer by its own answer; history pages at it.
    reply_budget_bytes: int = 128 * 1024
    db_version: str = "1"
    joins_per_session: int = 1000  # limits.joins_per_session; 0: no cap
    pref_label_chars: int = 256  # limits.pref_label_chars; 0: no cap
    pref_content_bytes: int = 32 * 1024  # limits.pref_content_bytes; 0: no cap


class Directory:
    """Categories by id, cached until the store's revision changes."""

    def __init__(self, store: ChatStore) -> None:
        self._store = store
        self._categories: dict[str, CategoryRecord] | None = None

    def invalidate(self) -> None:
        self._categories = None

    async def category(self, category_id: str) -> CategoryRecord | None:
        if self._categories is None:
            self._categories = {c.id: c for c in await self._store.list_categories()}
        return self._categories.get(category_id)


def invitation_block(domain: str, inv: InvitationRecord, room: RoomRecord) -> str:
    """One invitation, as cmd:getinv lists it and ntc:inv announces it."""
    return (
        f'<inv inviteId="{inv.id}" chanUri="{room_uri(domain, room.id)}" '
        f'name="{build.esc(room.name)}" inviter="{build.esc(inv.inviter)}" '
        f'ts="{ts_iso(inv.ts_ms)}"/>'
    )


def reply_name(command: str) -> str:
    name = command.partition(":")[2]
    return "rpl:getservinfo" if name == "getserverinfo" else f"rpl:{name}"


Handler = Callable[["CommandHandler", SessionView, Element | None], Awaitable[str]]


class CommandHandler:
    """One per worker; stateless between calls except for the category cache."""

    def __init__(
        self,
        store: ChatStore,
        rooms: RoomAccess,
        directory: Directory,
        info: ServerInfo,
        *,
        file_tokens: FileTokens | None = None,
    ) -> None:
        self._store = store
        self._rooms = rooms
        self.directory = directory
        self._info = info
        self._file_tokens = file_tokens  # None: no file service (no HTTP listener)
        self._root_uri = f"ma-cat://{info.domain}/{uuid.uuid5(uuid.NAMESPACE_DNS, info.domain)}"
        # New sessions' room lists, read once for the sign-in's getassociations.
        self.signin_views: SigninViews[asyncio.Future[SigninRooms | None]] = SigninViews()

    async def load_signin_rooms(self, session_id: str, user: str) -> SigninRooms:
        """Reads a new session's member, manager and followed rooms and its pending
        invitations in one store call, and parks the read for its first getassociations of
        each kind and its first getinv (signin_view.py)."""
        pending: asyncio.Future[SigninRooms | None] = asyncio.get_running_loop().create_future()
        self.signin_views.put(session_id, pending, user)
        try:
            rooms = await self._store.signin_rooms(user, _principals(user))
        except BaseException:
            self.signin_views.drop(session_id)
            pending.set_result(None)  # a getassociations already waiting asks the store
            raise
        pending.set_result(rooms)
        return rooms

    @property
    def info(self) -> ServerInfo:
        """The limits this handler enforces (what getserverinfo tells clients)."""
        return self._info

    async def command(self, session: SessionView, envid: str, cmd: Command) -> str:
        """Runs one command; always returns an rpl (errors become its resp code)."""
        handler = _HANDLERS.get(cmd.name)
        name = reply_name(cmd.name)
        try:
            if handler is None:
                raise NotImplementedCommand(f"unknown command {cmd.name}")
            data = await handler(self, session, cmd.data)
            if _too_large(data, self._info.reply_budget_bytes):
                raise TooLarge("the reply would be too large; narrow the request")
            return build.rpl(name, cmd.seqid, cmd.seqid, envid, 200, data)
        except PchatError as exc:
            return build.rpl(name, cmd.seqid, cmd.seqid, envid, exc.xccos_code, build.esc(str(exc)))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("command %s of %s failed", cmd.name, session.user)
            return build.rpl(name, cmd.seqid, cmd.seqid, envid, 500)

    async def on_grpchat(
        self, session: SessionView, envid: str, post: Post, *, client_key: str | None = None
    ) -> str:
        """A grpchat from the client: rpl:grpchat once durable (XCCOS.md §5)."""
        return (await self.grpchat_outcome(session, envid, post, client_key=client_key))[0]

    async def grpchat_outcome(
        self, session: SessionView, envid: str, post: Post, *, client_key: str | None = None
    ) -> tuple[str, PchatError | None]:
        """The rpl:grpchat once durable, and the refusal (None when stored), which the edge
        also answers the post's INFO with. ``client_key`` (default: the envid) makes a
        re-sent copy of the same post one post."""
        try:
            if post.author and not same_address(post.author, session.user):
                raise Forbidden("author is not the signed-in user")
            room_id = self._room_id(post.chan_uri)
            if room_id not in session.joined():
                await self._seen_room(session, room_id)  # a hidden room answers like a missing one
                raise Forbidden("join the room before posting")
            key = envid if client_key is None else client_key
            result = await self._rooms.append_post(
                room_id, session.session_id, session.user, key, post.text
            )
            data = (
                f'<grpchat chanUri="{build.esc(post.chan_uri)}" msgid="{result.seq}" '
                f'ts="{ts_iso(result.ts_ms)}"/>'
            )
            return build.rpl("rpl:grpchat", post.seqid, post.seqid, envid, 200, data), None
        except PchatError as exc:
            data = f'<grpchat chanUri="{build.esc(post.chan_uri)}"/>'
            reply = build.rpl("rpl:grpchat", post.seqid, post.seqid, envid, exc.xccos_code, data)
            return reply, exc

    async def _seen_room(
        self, session: SessionView, room_id: str
    ) -> tuple[RoomRecord, CategoryRecord]:
        """The room if the user may know it exists; else the very error of a missing room."""
        room = await self._store.get_room(room_id)
        category = await self.directory.category(room.category_id) if room else None
        if room is None or category is None or not rules.can_see(room, category, session.user):
            raise NotFound("no such room")
        return room, category

    def _room_id(self, uri: str) -> str:
        domain, room_id = parse_room_uri(uri)
        if domain.lower() != self._info.domain.lower():
            raise NotFound("no such room")
        return room_id

    def _room_ids(self, data: Element | None) -> list[str]:
        refs = room_refs(data)
        if not refs:
            raise BadRequest("no room named")
        return [self._room_id(uri) for uri in refs]

    def _chanib(
        self, room: RoomRecord, category: CategoryRecord, inner: str = "", ucnt: int | None = None
    ) -> str:
        """A room's information block; ``ucnt`` defaults to what this worker knows."""
        d = self._info.domain
        return build.chanib(
            room_uri(d, room.id),
            name=room.name,
            description=room.description,
            topic=room.topic,
            category=f"ma-cat://{d}/{room.category_id}",
            ucnt=self._rooms.online_count(room.id) if ucnt is None else ucnt,
            visibility=rules.visibility(room),
            filepost=rules.uploads_on(room, category),
            invite=invitations_on(room, category),
            logged=category.history,
            room_type=room.type,
            inner=inner,
        )

    async def _visible(
        self, rooms: list[RoomRecord], user: str
    ) -> list[tuple[RoomRecord, CategoryRecord]]:
        out = []
        for room in rooms:
            category = await self.directory.category(room.category_id)
            if category is not None and rules.can_see(room, category, user):
                out.append((room, category))
        return out

    # -- handlers (named _on_<command>) ---------------------------------------------------

    async def _on_requri(self, session: SessionView, data: Element | None) -> str:
        # The lookup step (SIPE: INVITE the pool, requri, BYE, INVITE the answer): name back
        # the URI this dialog was INVITEd with, so a hand-set pool URI (ocschat@) is kept.
        return build.uib(session.pool_uri or f"sip:pchat@{self._info.domain}")

    async def _on_getserverinfo(self, session: SessionView, data: Element | None) -> str:
        i = self._info
        base = i.http_base
        return (
            f'<sib infoType="123" serverTime="{ts_iso(int(time.time() * 1000))}" '
            f'searchLimit="{i.search_limit}" messageSizeLimit="{i.message_size_limit}" '
            f'storySizeLimit="{i.story_size_limit}" rootUri="{self._root_uri}" '
            f'dbVersion="{i.db_version}" '
            f'roomManagementUrl="{build.esc(base + "/rooms" if base else "")}" '
            f"{self._file_service(session.user)}/>"
        )

    def _file_service(self, user: str) -> str:
        """fileServiceUrl, and (pchat) the signed-in user's short-lived fileToken."""
        base, tokens = self._info.file_base or self._info.http_base, self._file_tokens
        if not base or tokens is None:
            return 'fileServiceUrl=""'
        token = tokens.issue(user, time.time())
        return f'fileServiceUrl="{build.esc(base)}/api" fileToken="{token}"'

    async def _on_getassociations(self, session: SessionView, data: Element | None) -> str:
        assoc = data.find("assoc") if data is not None else None
        kind = assoc.get("type", "member") if assoc is not None else "member"
        user = session.user
        if kind not in ("member", "manager", "presenter", "follower"):
            raise BadRequest(f"unknown association type {kind}")
        pending = self.signin_views.take(session.session_id, kind) if kind in KINDS else None
        parked = await pending if pending is not None else None
        if parked is not None:
            found = getattr(parked, kind)  # member, manager or follower
        elif kind == "follower":
            found = await self._store.followed_rooms(user)
        else:
            found = await self._store.rooms_with_principal(_principals(user), kind)  # type: ignore[arg-type]
        visible = await self._visible(found, user)
        if kind == "follower":
            visible = [(r, c) for r, c in visible if rules.can_read(r, c, user)]
        return "".join(self._chanib(r, c) for r, c in visible)

    async def _on_chansrch(self, session: SessionView, data: Element | None) -> str:
        qib = data.find("qib") if data is not None else None
        criteria = qib.get("criteria") if qib is not None else ""
        if not criteria:
            return await self._room_list(session.user)
        limit = self._info.search_limit
        # Fetch more than the limit: rooms the searcher may not see are filtered out here.
        found = await self._store.search_rooms(criteria, limit * 4)
        visible = (await self._visible(found, session.user))[:limit]
        return "".join(self._chanib(r, c) for r, c in visible)

    async def _room_list(self, user: str) -> str:
        """Empty criteria: every room the user may see, by name, as many as one reply holds.
        SIPE reads one rpl:chansrch and closes its room list, so this is not paged."""
        found = await self._store.search_rooms("", self._info.room_list_max)
        budget = self._info.reply_budget_bytes - 1024  # the rpl around them
        parts: list[str] = []
        for room, category in await self._visible(found, user):
            part = self._chanib(room, category)
            budget -= len(part.encode())
            if budget < 0:
                log.info("the room list for %s is cut at %d rooms (reply size)", user, len(parts))
                break
            parts.append(part)
        return "".join(parts)

    async def _join_one(
        self, session: SessionView, room_id: str, ids: dict[str, int] | None = None
    ) -> str:
        cap = self._info.joins_per_session
        joined = session.joined()
        if cap and room_id not in joined and len(joined) >= cap:
            raise QuotaExceeded(f"a session may be in at most {cap} rooms; leave one first")
        session.begin_join(room_id)
        ok = False
        try:
            who = Participant(session.session_id, session.user, session.gateway)
            result = await self._rooms.join(room_id, who)
            ok = True
        finally:
            session.end_join(room_id, ok)
        return self._join_block(result, {} if ids is None else ids)

    def _join_block(self, result: JoinResult, ids: dict[str, int]) -> str:
        """The room's users and the room. ``ids`` is the reply's id->URI map so far: a
        bjoin shares one across its rooms, as SIPE merges every uib of a reply into one."""
        fresh = [user for user in result.users if user not in ids]
        for user in fresh:
            ids[user] = len(ids)
        uibs = "".join(build.uib(user, id=ids[user]) for user in fresh)
        aibs = ""
        if result.users:
            aibs = build.aib("3984", ",".join(str(ids[u]) for u in result.users))
            if result.managers:
                aibs += build.aib("12276", ",".join(str(ids[m]) for m in result.managers))
        chan = self._chanib(result.room, result.category, aibs, ucnt=result.ucnt)
        return uibs + chan

    async def _on_join(self, session: SessionView, data: Element | None) -> str:
        return await self._join_one(session, self._room_ids(data)[0])

    async def _on_bjoin(self, session: SessionView, data: Element | None) -> str:
        out = []
        ids: dict[str, int] = {}  # one id per user across the whole reply
        for uri in room_refs(data):
            try:
                out.append(await self._join_one(session, self._room_id(uri), ids))
            except PchatError as exc:
                out.append(build.chanerr(uri, exc.xccos_code, str(exc)))
        return "".join(out)

    async def _on_part(self, session: SessionView, data: Element | None) -> str:
        room_id = self._room_ids(data)[0]
        session.left(room_id)
        await self._rooms.part(room_id, session.session_id)
        return build.chanib(room_uri(self._info.domain, room_id))

    async def _on_bccontext(self, session: SessionView, data: Element | None) -> str:
        room_id = self._room_ids(data)[0]
        query = history_query(data, self._info.history_max)
        messages = await self._rooms.history(room_id, session.user, query, session.session_id)
        uri = room_uri(self._info.domain, room_id)
        budget = self._info.reply_budget_bytes
        items, more = history_page(uri, messages, budget, newest_first=query.kind != "after")
        return build.chanib(uri, inner=items, extra_attrs={"more": "true"} if more else None)

    async def _on_getinv(self, session: SessionView, data: Element | None) -> str:
        parked_read = self.signin_views.take(session.session_id, "invitations")
        parked = await parked_read if parked_read is not None else None
        if parked is not None:  # the sign-in's own read: no store call unless there are some
            pending = parked.invitations
            rooms: dict[str, RoomRecord | None] = {inv.room_id: None for inv in pending}
            rooms.update((r.id, r) for r in parked.invited)  # a room not there was deleted
        else:
            pending = await self._store.pending_invitations(session.user)
            rooms = {}
        out = []
        for inv in pending:
            if inv.room_id not in rooms:
                rooms[inv.room_id] = await self._store.get_room(inv.room_id)
            room = rooms[inv.room_id]
            category = await self.directory.category(room.category_id) if room else None
            # An invitation to a room the user may no longer read is dropped, not shown.
            if room and category and rules.can_read(room, category, session.user):
                out.append(invitation_block(self._info.domain, inv, room))
        if pending:
            await self._store.mark_invitations_delivered([inv.id for inv in pending])
            # Shown: another session's parked read on this worker must not show them again.
            self.signin_views.drop_user(session.user)
        return "".join(out)

    async def _on_getpref(self, session: SessionView, data: Element | None) -> str:
        label, _ = pref_label(data, self._info.pref_label_chars)
        record = await self._store.get_pref(session.user, label)
        seqid, content = (record.seqid, record.content) if record else (0, b"")
        return pref_block(label, seqid, content)

    async def _on_setpref(self, session: SessionView, data: Element | None) -> str:
        label, pref = pref_label(data, self._info.pref_label_chars)
        seqid, content = pref_update(pref, self._info.pref_content_bytes)
        record = await self._store.set_pref(session.user, label, seqid, content)
        if record is None:
            raise Conflict("stale seqid")
        return pref_block(label, record.seqid, record.content)

    async def _on_follow(self, session: SessionView, data: Element | None) -> str:
        room_id = self._room_ids(data)[0]
        room, category = await self._seen_room(session, room_id)
        if not rules.can_read(room, category, session.user):
            raise Forbidden("not a member of this room")
        await self._store.follow(session.user, room_id)
        self.signin_views.drop(session.session_id)  # its parked follower list is stale
        session.set_following(room_id, True)
        return build.chanib(room_uri(self._info.domain, room_id))

    async def _on_unfollow(self, session: SessionView, data: Element | None) -> str:
        room_id = self._room_ids(data)[0]
        await self._store.unfollow(session.user, room_id)
        self.signin_views.drop(session.session_id)
        session.set_following(room_id, False)
        return build.chanib(room_uri(self._info.domain, room_id))

    async def _on_nodespermcreatechild(self, session: SessionView, data: Element | None) -> str:
        allowed = any(
            rules.matches(c.creators, session.user) and rules.category_allows(c, session.user)
            for c in await self._store.list_categories()
        )
        return f'<perm create="{"true" if allowed else "false"}"/>'


def _principals(user: str) -> list[str]:
    """Who ``user`` is in role lists: the address and its domain."""
    return [user, f"domain:{rules.domain_of(user)}"]


def _too_large(data: str, budget_bytes: int) -> bool:
    """Whether the reply's UTF-8 exceeds the budget; encoded only when its characters
    could (at most 4 bytes each), so ordinary replies cost a length check."""
    return len(data) * 4 > budget_bytes and len(data.encode()) > budget_bytes


_HANDLERS: dict[str, Handler] = {
    f"cmd:{name[4:]}": getattr(CommandHandler, name)
    for name in dir(CommandHandler)
    if name.startswith("_on_")
}
COMMANDS = frozenset(_HANDLERS)
