"""A signed-in XCCOS session: one INVITE dialog, its joined rooms and its command queue.

A session knows nothing of connections or the gateway: it is given a ``send`` callable
for its bytes, an ``end`` callable to end itself, and a small ``SessionHost`` for the
room index and the shared per-worker parts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Set
from typing import Protocol

from core.errors import NoDialog, PchatError
from core.xccos import build
from core.xccos.commands import COMMANDS, CommandHandler
from core.xccos.envelope import Command, Envelope, Post
from shards.metrics import Metrics
from shards.worker.admission import Ticket
from shards.worker.answer import PostAnswer
from shards.worker.newcontent import Pending

log = logging.getLogger(__name__)

# Envelopes one session may have waiting: a client that pipelines more than this gets 503
# for the excess instead of taking a larger share of the worker's admission queue.
MAX_SESSION_QUEUE = 64
# Events held for a room while its join is being authorised: about a recent-ring's worth;
# past it the session catches up with bccontext like after any gap.
MAX_HELD_EVENTS = 200


class Framing(Protocol):
    """How a session's envelopes are framed for its connection: INFOs of a SIP dialog
    (``core.sip.dialog.Dialog``), or a browser's WebSocket, which takes them bare."""

    call_id: str

    def info(self, body: bytes) -> bytes: ...
    def request(self, method: str, extra: str = "") -> bytes: ...


class SessionHost(Protocol):
    """What a session needs of the worker that holds it (the gateway)."""

    handler: CommandHandler
    metrics: Metrics

    def attach(self, room_id: str, session: Session) -> None: ...
    def detach(self, room_id: str, session: Session) -> None: ...
    def add_follower(self, room_id: str, session: Session) -> None: ...
    def remove_follower(self, room_id: str, session: Session) -> None: ...
    def sessions_of(self, user: str) -> list[Session]: ...
    def remove_session(self, session: Session) -> None: ...
    def next_envid(self) -> int: ...


class Session:
    """Implements ``core.xccos.commands.SessionView`` for the handler."""

    def __init__(
        self,
        *,
        host: SessionHost,
        dialog: Framing,
        user: str,
        session_id: str,
        gateway: int,
        send: Callable[[bytes], None],
        end: Callable[[Session, bool], None],
    ) -> None:
        self._host = host
        self._send = send
        self._end = end  # (session, send_bye): the connection forgets the dialog
        self.gateway = gateway
        self.dialog = dialog
        self.user = user
        self.session_id = session_id
        self.pool_uri = ""  # the URI the client INVITEd (requri names it); "": sip:pchat@D
        self._joined: set[str] = set()
        self._held: dict[str, list[bytes]] = {}
        self._queue: deque[tuple[Envelope, Ticket, Callable[..., None], PostAnswer | None]] = (
            deque()
        )
        self._task: asyncio.Task[None] | None = None
        self._posts: set[asyncio.Task[None]] = set()
        self._expiry: asyncio.TimerHandle | None = None
        self.closed = False
        self.following: set[str] = set()
        self.newcontent: dict[str, Pending] = {}

    # -- SessionView ----------------------------------------------------------------------

    def begin_join(self, room_id: str) -> None:
        if room_id not in self._joined:
            self._held.setdefault(room_id, [])
        self._host.attach(room_id, self)

    def end_join(self, room_id: str, ok: bool) -> None:
        held = self._held.pop(room_id, [])
        if ok and not self.closed:
            self._joined.add(room_id)
            for body in held:
                self._send(self.dialog.info(body))
        elif room_id not in self._joined:
            self._host.detach(room_id, self)

    def left(self, room_id: str) -> None:
        self._joined.discard(room_id)
        self._held.pop(room_id, None)
        self._host.detach(room_id, self)

    def joined(self) -> Set[str]:
        return self._joined

    def set_following(self, room_id: str, on: bool) -> None:
        """Follow a room on every local session of this user (the list is server-side)."""
        for session in self._host.sessions_of(self.user):
            session.follow(room_id, on)

    def follow(self, room_id: str, on: bool) -> None:
        if on and room_id not in self.following and not self.closed:
            self.following.add(room_id)
            self._host.add_follower(room_id, self)
        elif not on and room_id in self.following:
            self.following.discard(room_id)
            self._host.remove_follower(room_id, self)

    # -- delivery -------------------------------------------------------------------------

    def deliver(self, room_id: str, body: bytes) -> None:
        if self.closed:
            return  # a sliced fan-out may reach a session that ended since it was queued
        held = self._held.get(room_id)
        if held is not None:
            if len(held) < MAX_HELD_EVENTS:
                held.append(body)
            return
        self._send(self.dialog.info(body))

    def send_inner(self, inner: str) -> None:
        if not self.closed:
            self._send(self.dialog.info(build.envelope(self._host.next_envid(), inner)))

    # -- commands -------------------------------------------------------------------------

    def can_queue(self) -> bool:
        return len(self._queue) < MAX_SESSION_QUEUE

    def submit(self, envelope: Envelope, ticket: Ticket, answer: PostAnswer | None = None) -> None:
        """Queues an admitted envelope, holding its ticket until its last item is answered;
        commands of one session run in arrival order. ``answer``: the INFO of an envelope
        with posts, answered once they have their outcome (shards/worker/answer.py)."""
        self._queue.append((envelope, ticket, ticket.hold(), answer))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._queue and not self.closed:
                envelope, ticket, release, answer = self._queue.popleft()
                try:
                    await self._run_envelope(envelope, ticket, answer)
                except Exception:  # a bug: logged once, this session ends, the worker stays
                    log.exception("bug running an envelope of %s; ending the session", self.user)
                    if answer is not None:
                        answer.fail(PchatError("internal error"))
                    self.end()
                finally:
                    release()
        finally:
            self._task = None
            for _, _, release, answer in self._queue:  # dropped on close: places go back
                if answer is not None:
                    answer.fail(NoDialog("the session ended"))
                release()
            self._queue.clear()

    async def _run_envelope(
        self, envelope: Envelope, ticket: Ticket, answer: PostAnswer | None
    ) -> None:
        """Runs an envelope's items in order, yielding to the loop between them. Posts are
        started in order (so they take their seq in arrival order) and answered when
        durable; each holds the envelope's ticket until then."""
        reply = self.send_inner if answer is None else answer.reply
        n = 0
        for i, item in enumerate(envelope.items):
            if i:
                await asyncio.sleep(0)  # one item per turn: a long envelope shares the loop
            if self.closed:
                if answer is not None:
                    answer.fail(NoDialog("the session ended"))
                return
            if isinstance(item, Post):
                # The retry key is the envid, made unique per post (by position).
                key = envelope.envid if n == 0 else f"{envelope.envid}.{n}"
                n += 1
                if answer is not None:
                    answer.started()
                task = asyncio.get_running_loop().create_task(
                    self._run_post(envelope.envid, key, item, answer)
                )
                self._posts.add(task)
                task.add_done_callback(self._posts.discard)
                task.add_done_callback(ticket.hold())  # held until the post is answered
            elif isinstance(item, Command):
                started = time.perf_counter()
                reply(await self._host.handler.command(self, envelope.envid, item))
                name = item.name if item.name in COMMANDS else "unknown"  # bounded label set
                self._host.metrics.command(name, time.perf_counter() - started)
        if answer is not None:
            answer.seal()

    async def _run_post(self, envid: str, key: str, post: Post, answer: PostAnswer | None) -> None:
        started = time.perf_counter()
        handler = self._host.handler
        try:
            reply, refusal = await handler.grpchat_outcome(self, envid, post, client_key=key)
        except Exception:  # a bug: as in _drain
            log.exception("bug running a post of %s; ending the session", self.user)
            if answer is not None:
                answer.fail(PchatError("internal error"))
            self.end()
            return
        if answer is None:
            self.send_inner(reply)
        else:
            answer.post_done(reply, refusal)
        self._host.metrics.command("grpchat", time.perf_counter() - started)

    # -- lifetime -------------------------------------------------------------------------

    def refresh(self, expires_s: float) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(expires_s, self.expire)

    def expire(self) -> None:
        log.info("session of %s expired without refresh", self.user)
        self._end(self, True)

    def end(self) -> None:
        """The server ends the session: BYE to the client, every room left."""
        self._end(self, True)

    def close(self) -> list[str]:
        """Ends the session locally; returns the rooms its owners must be told about."""
        if self.closed:
            return []
        self.closed = True
        if self._expiry is not None:
            self._expiry.cancel()
        rooms = list(self._joined | self._held.keys())
        for room_id in rooms:
            self._host.detach(room_id, self)
        for room_id in list(self.following):
            self.follow(room_id, False)
        for pending in self.newcontent.values():
            if pending.timer is not None:
                pending.timer.cancel()
        self._joined.clear()
        self._held.clear()
        self._host.remove_session(self)
        return rooms
