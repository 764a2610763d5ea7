"""The load generator's browser session: the WebSocket protocol (docs/websocket.md) with
a lean receive path, beside ``client.lean.LeanClient`` for SIP.

Posts arriving live go to ``on_posts`` as their texts' bytes, as the SIP lean client
hands them over, so one latency recorder serves both kinds.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec

REQUEST_TIMEOUT_S = 10.0  # as the SIP client's command timeout

_frame = msgspec.json.Decoder(list[dict[str, Any]])


class WsLoadClient:
    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, on_posts: Callable[[list[bytes]], None]
    ) -> None:
        self.ws = ws
        self._on_posts = on_posts
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.posts_received = 0
        self.bytes_received = 0
        self.retries_503 = 0
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(
        cls,
        http: aiohttp.ClientSession,
        url: str,
        user: str,
        password: str,
        on_posts: Callable[[list[bytes]], None],
    ) -> WsLoadClient:
        """Opens ``url`` (ws://host:port/ws) signed in with HTTP Basic; waits for hello."""
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        ws = await http.ws_connect(url, headers={"Authorization": f"Basic {token}"})
        client = cls(ws, on_posts)
        return client

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data: str = msg.data
            self.bytes_received += len(data)
            texts = []
            for item in _frame.decode(data):
                kind = item["type"]
                if kind == "message":
                    texts.append(item["message"]["text"].encode())
                    continue
                fut = self._waiting.pop(item.get("id", 0), None)
                if fut is not None and not fut.done():
                    fut.set_result(item)
            if texts:
                self.posts_received += len(texts)
                self._on_posts(texts)
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("the WebSocket closed"))

    async def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        """One request; a 503 answer is retried after a short pause, as SIP's is."""
        for attempt in range(20):
            rid = next(self._ids)
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._waiting[rid] = fut
            await self.ws.send_str(
                msgspec.json.encode({"type": kind, "id": rid, **fields}).decode()
            )
            try:
                reply = await asyncio.wait_for(fut, REQUEST_TIMEOUT_S)
            finally:
                self._waiting.pop(rid, None)
            if reply.get("type") == "error" and reply.get("code") == 503:
                self.retries_503 += 1
                await asyncio.sleep(0.05 * (attempt + 1))
                continue
            return reply
        raise TimeoutError(f"{kind}: still 503 after 20 tries")

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
