"""A signed-in XCCOS session: one INVITE dialog, its joined rooms and its command queue."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Set
from typing import TYPE_CHECKING

from core.sip.dialog import Dialog
from core.xccos import build
from core.xccos.commands import COMMANDS
from core.xccos.envelope import Command, Envelope, Post
from shards.worker.newcontent import Pending

if TYPE_CHECKING:
    from shards.worker.connection import SipConnection
    from shards.worker.gateway import Gateway

log = logging.getLogger(__name__)

# Envelopes one session may have waiting: a client that pipelines more than this gets 503
# for the excess instead of taking a larger share of the worker's admission queue.
MAX_SESSION_QUEUE = 64
# Events held for a room while its join is being authorised: about a recent-ring's worth;
# past it the session catches up with bccontext like after any gap.
MAX_HELD_EVENTS = 200


class Session:
    """Implements ``core.xccos.commands.SessionView`` for the handler."""

    def __init__(self, conn: SipConnection, gateway: Gateway, dialog: Dialog, user: str) -> None:
        self.conn = conn
        self.gateway = gateway.worker_id
        self._gw = gateway
        self.dialog = dialog
        self.user = user
        self.session_id = gateway.new_session_id()
        self._joined: set[str] = set()
        self._held: dict[str, list[bytes]] = {}
        self._queue: deque[Envelope] = deque()
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
        self._gw.attach(room_id, self)

    def end_join(self, room_id: str, ok: bool) -> None:
        held = self._held.pop(room_id, [])
        if ok and not self.closed:
            self._joined.add(room_id)
            for body in held:
                self.conn.send(self.dialog.info(body))
        elif room_id not in self._joined:
            self._gw.detach(room_id, self)

    def left(self, room_id: str) -> None:
        self._joined.discard(room_id)
        self._held.pop(room_id, None)
        self._gw.detach(room_id, self)

    def joined(self) -> Set[str]:
        return self._joined

    def set_following(self, room_id: str, on: bool) -> None:
        """Follow a room on every local session of this user (the list is server-side)."""
        for session in self._gw.sessions_of(self.user):
            session.follow(room_id, on)

    def follow(self, room_id: str, on: bool) -> None:
        if on and room_id not in self.following and not self.closed:
            self.following.add(room_id)
            self._gw.add_follower(room_id, self)
        elif not on and room_id in self.following:
            self.following.discard(room_id)
            self._gw.remove_follower(room_id, self)

    # -- delivery -------------------------------------------------------------------------

    def deliver(self, room_id: str, body: bytes) -> None:
        held = self._held.get(room_id)
        if held is not None:
            if len(held) < MAX_HELD_EVENTS:
                held.append(body)
            return
        self.conn.send(self.dialog.info(body))

    def send_inner(self, inner: str) -> None:
        if not self.closed:
            self.conn.send(self.dialog.info(build.envelope(self._gw.next_envid(), inner)))

    # -- commands -------------------------------------------------------------------------

    def can_queue(self) -> bool:
        return len(self._queue) < MAX_SESSION_QUEUE

    def submit(self, envelope: Envelope) -> None:
        """Queues an admitted envelope; commands of one session run in arrival order."""
        self._queue.append(envelope)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._queue and not self.closed:
                await self._process(self._queue.popleft())
        finally:
            self._task = None
            for _ in range(len(self._queue)):  # dropped on close: free their admission places
                self._gw.release()
            self._queue.clear()

    async def _process(self, envelope: Envelope) -> None:
        """Runs an envelope's items in order; its admission place is freed when the last
        item is answered (posts answer when durable, after this returns)."""
        handler = self._gw.handler
        posts = sum(1 for item in envelope.items if isinstance(item, Post))
        left = [posts]
        n = 0
        for item in envelope.items:
            if isinstance(item, Post):
                # Started now, so posts take their seq in arrival order; the session goes on
                # while the commit runs and the reply follows when the post is durable. The
                # retry key is the envid, made unique per post (by position) in one envelope.
                key = envelope.envid if n == 0 else f"{envelope.envid}.{n}"
                n += 1
                task = asyncio.get_running_loop().create_task(
                    self._post(envelope.envid, key, item, left)
                )
                self._posts.add(task)
                task.add_done_callback(self._posts.discard)
            elif isinstance(item, Command):
                started = time.perf_counter()
                reply = await handler.command(self, envelope.envid, item)
                self.send_inner(reply)
                name = item.name if item.name in COMMANDS else "unknown"  # bounded label set
                self._gw.metrics.command(name, time.perf_counter() - started)
        if not posts:
            self._gw.release()

    async def _post(self, envid: str, key: str, post: Post, left: list[int]) -> None:
        started = time.perf_counter()
        try:
            reply = await self._gw.handler.post(self, envid, post, client_key=key)
            self.send_inner(reply)
            self._gw.metrics.command("grpchat", time.perf_counter() - started)
        finally:
            left[0] -= 1
            if left[0] == 0:
                self._gw.release()

    # -- lifetime -------------------------------------------------------------------------

    def refresh(self, expires_s: int) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(expires_s, self.conn.expire_session, self)

    def close(self) -> list[str]:
        """Ends the session locally; returns the rooms its owners must be told about."""
        if self.closed:
            return []
        self.closed = True
        if self._expiry is not None:
            self._expiry.cancel()
        rooms = list(self._joined | self._held.keys())
        for room_id in rooms:
            self._gw.detach(room_id, self)
        for room_id in list(self.following):
            self.follow(room_id, False)
        for pending in self.newcontent.values():
            if pending.timer is not None:
                pending.timer.cancel()
        self._joined.clear()
        self._held.clear()
        self._gw.remove_session(self)
        return rooms
