"""ntc:newcontent: tell a session about posts in rooms it follows but has not joined.

At most one notice per room per session every ``interval_s`` (a busy followed room must
not turn into a second copy of its traffic); posts in between are counted in ``unread``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Set
from typing import Protocol

from core.xccos import build


class Pending:
    """One followed room of one session: what the next notice will say."""

    __slots__ = ("unread", "last_seq", "last_sent", "timer")

    def __init__(self) -> None:
        self.unread = 0
        self.last_seq = 0
        self.last_sent = float("-inf")
        self.timer: asyncio.TimerHandle | None = None


class Follower(Protocol):
    """A session that follows rooms (shards.worker.session.Session)."""

    closed: bool
    newcontent: dict[str, Pending]

    def joined(self) -> Set[str]: ...
    def send_inner(self, inner: str) -> None: ...


class NewContentNotices:
    def __init__(self, domain: str, interval_s: float) -> None:
        self._domain = domain
        self._interval = interval_s

    def on_post(self, session: Follower, room_id: str, seq: int) -> None:
        if session.closed or room_id in session.joined():
            return
        pending = session.newcontent.get(room_id)
        if pending is None:
            pending = session.newcontent[room_id] = Pending()
        pending.unread += 1
        pending.last_seq = max(pending.last_seq, seq)
        if pending.timer is not None:
            return  # a notice is already due; it will carry this post too
        loop = asyncio.get_running_loop()
        wait = pending.last_sent + self._interval - loop.time()
        if wait <= 0:
            self._send(session, room_id, pending)
        else:
            pending.timer = loop.call_later(wait, self._send, session, room_id, pending)

    def _send(self, session: Follower, room_id: str, pending: Pending) -> None:
        pending.timer = None
        if session.closed or room_id in session.joined() or not pending.unread:
            pending.unread = 0
            return
        uri = f"ma-chan://{self._domain}/{room_id}"
        data = build.chanib(
            uri, extra_attrs={"lastmsgid": str(pending.last_seq), "unread": str(pending.unread)}
        )
        session.send_inner(build.ntc("ntc:newcontent", data))
        pending.last_sent = asyncio.get_running_loop().time()
        pending.unread = 0
