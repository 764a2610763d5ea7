"""Posts typed into `pchat chat`, in order: sent when connected, each confirmed with its
message id, kept while disconnected and sent after reconnecting, or reported not sent.

Each line keeps one envelope id across resends, so a post whose confirmation was lost with
the connection is stored once however often it is sent again (XCCOS.md: retries are safe).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import deque

from client.chat_link import NETWORK_ERRORS, Link
from client.errors import SipError
from client.inbox import ChatMessage

# Lines kept while disconnected: a person types far fewer during an outage; past it each
# new line is reported not sent at once instead of piling up unseen.
MAX_PENDING = 100
SEND_TIMEOUT = 10.0  # s for one post's durable confirmation before it counts as unconfirmed


class Outbox:
    def __init__(self, link: Link) -> None:
        self._link = link
        self.pending: deque[tuple[str, str, int]] = deque()  # (room, text, envid)
        self._envids = itertools.count(random.randrange(1 << 30, 1 << 31))
        self._wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()

    def add(self, room: str, text: str) -> None:
        if len(self.pending) >= MAX_PENDING:
            self._link.out(f"* not sent ({MAX_PENDING} lines already wait): {text}")
            return
        if not self._link.up.is_set():
            self._link.out("* not connected: this line is sent after reconnecting")
        self.pending.append((room, text, next(self._envids)))
        self.idle.clear()
        self._wake.set()

    def abandon(self) -> None:
        """The chat ends: every line still waiting is reported, none is silently dropped."""
        for _, text, _ in self.pending:
            self._link.out(f"* not sent: {text}")
        self.pending.clear()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.pending:
                await self._link.up.wait()
                await self._send_first()
            self.idle.set()

    async def _send_first(self) -> None:
        room, text, envid = self.pending[0]
        client = self._link.client
        assert client is not None
        try:
            reply = await client.post_envelope(room, text, envid=envid, timeout=SEND_TIMEOUT)
        except (*NETWORK_ERRORS, SipError):
            # Not confirmed: sent again (same envid) once the link is up again.
            waiter = asyncio.ensure_future(client.ended.wait())
            await asyncio.wait({waiter}, timeout=1.0)
            waiter.cancel()
            return
        self.pending.popleft()
        el = reply.data.find("grpchat") if reply.data is not None else None
        if reply.code != 200 or el is None:
            self._link.out(f"* not sent ({reply.code} {reply.text}): {text}")
            return
        msgid, ts = int(el.get("msgid") or 0), el.get("ts") or ""
        self._link.show(ChatMessage(room, client.uri, ts, msgid, text), mine=True)
