"""A small client of the browser WebSocket protocol (docs/websocket.md) for the tests."""

from __future__ import annotations

import asyncio
import base64
import itertools
from typing import Any

import aiohttp

from tests.conftest import DOMAIN, PASSWORD


def basic(user: str, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}@{DOMAIN}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class WsClient:
    """One browser session: requests by id, everything else in ``events``."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http = http
        self.ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.hello: dict[str, Any] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(
        cls, port: int, user: str, password: str = PASSWORD, **headers: str
    ) -> WsClient:
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(
                f"http://127.0.0.1:{port}/ws", headers={**basic(user, password), **headers}
            )
        except BaseException:
            await http.close()
            raise
        client = cls(http, ws)
        hello = await client.next("hello")
        client.hello = hello
        return client

    @property
    def worker(self) -> int:
        """The worker holding this socket (the session id is "<worker>.<n>")."""
        return int(str(self.hello["session"]).split(".")[0])

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            for item in msg.json():
                rid = item.get("id")
                fut = self._waiting.pop(rid, None) if rid else None
                if fut is not None and not fut.done():
                    fut.set_result(item)
                else:
                    await self.events.put(item)

    async def request(self, type_: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        await self.ws.send_json({"type": type_, "id": rid, **fields})
        return await asyncio.wait_for(fut, timeout)

    async def next(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next event of ``kind`` (others before it are dropped)."""
        async with asyncio.timeout(timeout):
            while True:
                item = await self.events.get()
                if item["type"] == kind:
                    return item

    async def post(self, room: str, text: str, key: str) -> dict[str, Any]:
        return await self.request("post", room=room, text=text, key=key)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.http.close()
