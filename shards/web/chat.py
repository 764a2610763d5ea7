"""The browser chat client: the page (GET /chat) and its WebSocket (GET /ws), shards layer.

The upgrade is refused before any session exists: a foreign Origin gets 403 (the CSRF
guard's check, for a GET), a request without valid credentials 401, a user whose
persistent chat is off 403, one over the sessions-per-user quota 403.
"""

from __future__ import annotations

import asyncio
import socket
from importlib import resources
from typing import cast

from aiohttp import web

from core.browser.translate import Encoder
from core.config import Settings
from shards.web.csrf import CsrfGuard
from shards.web.files import Authenticate
from shards.web.ws_connection import WsConnection
from shards.worker.gateway import Gateway
from shards.worker.unauth import CappedProtocol

# The page's files, package data beside this module (no external assets: works offline).
ASSETS = {
    "chat.html": "text/html",
    "chat.js": "text/javascript",
    "chat.css": "text/css",
}


def _asset(name: str) -> bytes:
    return (resources.files("shards.web") / "static" / name).read_bytes()


class ChatSocket:
    def __init__(
        self, gateway: Gateway, settings: Settings, guard: CsrfGuard, authenticate: Authenticate
    ) -> None:
        self._gw = gateway
        self._ws = settings.websocket
        self._per_user = settings.limits.sessions_per_user
        self._guard = guard
        self._authenticate = authenticate
        # One per worker: a fan-out's envelope is translated once for all its browsers.
        # Envelopes up to the output cap: nothing larger could be sent anyway.
        self._encoder = Encoder(max(settings.websocket.max_output_bytes, 64 * 1024))
        self._assets = {name: _asset(name) for name in ASSETS}

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/ws", self.upgrade)
        app.router.add_get("/chat", self.page)
        app.router.add_get("/chat/{asset}", self.asset)

    async def page(self, request: web.Request) -> web.StreamResponse:
        return self._serve("chat.html")

    async def asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["asset"]
        if name not in ASSETS or name == "chat.html":
            raise web.HTTPNotFound()
        return self._serve(name)

    def _serve(self, name: str) -> web.Response:
        return web.Response(
            body=self._assets[name],
            content_type=ASSETS[name],
            charset="utf-8",
            headers={
                "X-Content-Type-Options": "nosniff",
                # Only this server's own scripts, styles and socket: no external asset.
                "Content-Security-Policy": (
                    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                    "frame-ancestors 'none'"
                ),
                "Cache-Control": "no-cache",
            },
        )

    async def upgrade(self, request: web.Request) -> web.StreamResponse:
        refused = self._guard.origin_refusal(request)
        if refused is not None:
            return refused
        actor = await self._authenticate(request)
        if isinstance(actor, web.Response):
            return actor
        record = await self._gw.store.get_user(actor.uri)
        if record is None or not record.enabled:
            raise web.HTTPForbidden(text="persistent chat is not enabled for this user\n")
        if self._per_user and len(self._gw.sessions_of(actor.uri)) >= self._per_user:
            raise web.HTTPForbidden(text=f"at most {self._per_user} sessions per user\n")
        ws = web.WebSocketResponse(
            max_msg_size=self._ws.max_message_bytes or 4 * 1024 * 1024,
            heartbeat=self._ws.heartbeat_s or None,
            compress=False,  # a fan-out frame is built once; deflate would be per socket
        )
        if not ws.can_prepare(request).ok:
            raise web.HTTPBadRequest(text="expected a WebSocket upgrade\n")
        await ws.prepare(request)
        transport = cast(asyncio.Transport, request.transport)
        protocol = transport.get_protocol()
        if isinstance(protocol, CappedProtocol):
            protocol.signed_in()  # a signed-in session, as a SIP connection after sign-in
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # As for SIP: a fixed kernel send buffer, so what a tab leaves unread is bounded
            # by it plus websocket.max_output_bytes.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._ws.max_output_bytes)
        conn = WsConnection(self._gw, ws, transport, actor.uri, record.ha1, self._encoder, self._ws)
        await conn.run()
        return ws
