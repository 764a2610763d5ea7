"""Gateway: the sessions and connections this worker holds, admission, flushing."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Mapping
from typing import Protocol

from core.auth.throttle import Throttle
from core.config import Settings
from core.errors import PchatError
from core.rooms import rules
from core.sip.useragent import UaSettings
from core.store.base import ChatStore, RoomRecord, UserRecord
from core.xccos.commands import CommandHandler, RoomAccess
from shards.metrics import Metrics
from shards.worker.admission import Admission
from shards.worker.output import Flushable, PendingOutput
from shards.worker.rooms import LocalRooms
from shards.worker.session import Session
from shards.worker.unauth import UnauthCaps

log = logging.getLogger(__name__)


class Connection(Protocol):
    """A client connection as the gateway sees it: written in a turn, flushed at its end."""

    @property
    def user(self) -> str | None: ...
    @property
    def signed_in_ha1(self) -> dict[str, str]: ...
    def flush(self) -> None: ...
    def abort(self) -> None: ...
    def sign_out(self, why: str) -> None: ...


def _ua_settings(settings: Settings, worker_id: int) -> UaSettings:
    return UaSettings(
        domain=settings.domain,
        pool_uri=settings.pool_uri,
        auth_algorithms=settings.sip.auth_algorithms,
        trusted_hosts=settings.sip.trusted_hosts,
        session_expires_s=settings.sip.session_expires_s,
        server=f"pchat (worker {worker_id})",
    )


class Gateway:
    """Owns the local sessions and connections; the ``SessionHost`` of every session.
    Room membership and event delivery are ``LocalRooms``'."""

    def __init__(
        self,
        settings: Settings,
        worker_id: int,
        store: ChatStore,
        handler: CommandHandler,
        router: RoomAccess,
        local: LocalRooms,
        metrics: Metrics,
        output: PendingOutput,
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.store = store
        self.handler = handler
        self.router = router
        self.local = local
        self.ua_settings = _ua_settings(settings, worker_id)  # one for every connection
        self.throttle = Throttle(settings.auth)  # SIP and HTTP sign-ins of this worker
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections: set[Connection] = set()
        self.output = output  # the connections written to, flushed together
        self.metrics = metrics
        # INFOs accepted (200 sent) whose replies are not yet out.
        self.admission = Admission(
            settings.limits.admission_queue, lambda: metrics.rejected("admission")
        )
        self.unauth = UnauthCaps.from_limits(settings.limits, metrics.connection_refused)
        self.sessions: dict[str, Session] = {}
        self.by_user: dict[str, set[Session]] = {}  # a user's devices signed in here
        self._session_ids = itertools.count(1)

    def want_flush(self, conn: Flushable) -> None:
        """One flush for every connection written to, instead of one callback per
        connection (a 200-recipient post touches 200 connections): ``PendingOutput``."""
        self.output.want_flush(conn)

    def new_session_id(self) -> str:
        return f"{self.worker_id}.{next(self._session_ids)}"

    def next_envid(self) -> int:
        return self.local.next_envid()

    # Room membership, for the sessions (SessionHost): kept by LocalRooms.
    def attach(self, room_id: str, session: Session) -> None:
        self.local.attach(room_id, session)

    def detach(self, room_id: str, session: Session) -> None:
        self.local.detach(room_id, session)

    def add_follower(self, room_id: str, session: Session) -> None:
        self.local.add_follower(room_id, session)

    def remove_follower(self, room_id: str, session: Session) -> None:
        self.local.remove_follower(room_id, session)

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

    def end_stale(self, users: Mapping[str, UserRecord]) -> None:
        """After a change of users: a deleted user, or one whose password changed, is
        signed out (BYE, then the connection closes); a disabled one's sessions end."""
        for conn in list(self.connections):
            user = conn.user
            if user is None:
                continue
            record = users.get(user)
            if record is None:
                conn.sign_out("the user was deleted")
            elif record.ha1 != conn.signed_in_ha1:
                conn.sign_out("the password changed")
        for user in [u for u in self.by_user if not (u in users and users[u].enabled)]:
            for session in self.sessions_of(user):
                log.info("ending the session of %s: persistent chat disabled", user)
                session.end()

    def load_follows(self, session: Session) -> None:
        """A new session follows what its user follows (kept in the store, per user)."""
        task = asyncio.get_running_loop().create_task(self._load_follows(session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load_follows(self, session: Session) -> None:
        try:
            # One read for the sign-in: its getassociations take their lists from it.
            signin = await self.handler.load_signin_rooms(session.session_id, session.user)
            rooms = signin.follower
        except PchatError as exc:
            log.warning("followed rooms of %s not loaded: %s", session.user, exc)
            return
        for room in rooms:
            if await self._readable(room, session.user):  # follows outlive permissions
                session.follow(room.id, True)

    async def may_read(self, room_id: str, user: str) -> bool:
        room = await self.store.get_room(room_id)
        return room is not None and await self._readable(room, user)

    async def _readable(self, room: RoomRecord, user: str) -> bool:
        category = await self.handler.directory.category(room.category_id)
        return category is not None and rules.can_read(room, category, user)

    async def recheck_follows(self) -> None:
        """Rules changed: sessions stop hearing of rooms they may no longer read."""
        for room_id, followers in self.local.followed():
            for session in followers:
                if not await self.may_read(room_id, session.user):
                    session.follow(room_id, False)

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
