"""What the client receives for the application: chat messages and the bounded inbox."""

from __future__ import annotations

import asyncio
from collections import deque

# Posts and notices kept for the application to read; past it the oldest are dropped and
# counted, so a client that never reads cannot grow without bound.
MAX_INBOX = 10_000


class ChatMessage:
    __slots__ = ("room", "author", "ts", "msgid", "text")

    def __init__(self, room: str, author: str, ts: str, msgid: int, text: str) -> None:
        self.room = room
        self.author = author
        self.ts = ts
        self.msgid = msgid
        self.text = text

    def __repr__(self) -> str:
        return f"ChatMessage({self.room!r}, {self.author!r}, {self.msgid}, {self.text!r})"


class _Inbox:
    """A bounded FIFO the application awaits on."""

    def __init__(self) -> None:
        self.items: deque[object] = deque()
        self.dropped = 0
        self._ready = asyncio.Event()

    def put(self, item: object) -> None:
        if len(self.items) >= MAX_INBOX:
            self.items.popleft()
            self.dropped += 1
        self.items.append(item)
        self._ready.set()

    async def get(self, timeout: float) -> object:
        while not self.items:
            self._ready.clear()
            await asyncio.wait_for(self._ready.wait(), timeout)
        return self.items.popleft()
