"""The browser chat client: the page (GET /chat) and its WebSocket (GET /ws), shards layer.

The upgrade is refused before any session exists: a foreign Origin gets 403 (the CSRF
guard's check, for a GET), a request without valid credentials 401, one signed in by the
pages' cookie without its session's token (``?csrf=``) 403, a user whose persistent chat
is off 403, one over the sessions-per-user quota 403.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
from importlib import resources
from typing import cast
from urllib.parse import quote

from aiohttp import web

from core.browser.translate import Encoder
from core.config import Settings
from shards.web.api import CSRF_KEY
from shards.web.audit_trail import WebAudit
from shards.web.csrf import CsrfGuard
from shards.web.files import Authenticate
from shards.web.html import SECURITY_HEADERS
from shards.web.pages_signin import redirect
from shards.web.ws_connection import WsConnection
from shards.worker.gateway import Gateway
from shards.worker.unauth import CappedProtocol

CSRF_PARAM = "csrf"  # the upgrade's query parameter: the session's token (docs/websocket.md)


class ChatSocket:
    def __init__(
        self,
        gateway: Gateway,
        settings: Settings,
        guard: CsrfGuard,
        authenticate: Authenticate,
        audit: WebAudit,
    ) -> None:
        self._audit = audit  # an opened session is recorded as it opens
        self._gw = gateway
        self._ws = settings.websocket
        self._per_user = settings.limits.sessions_per_user
        self._guard = guard
        self._authenticate = authenticate
        # One per worker: a fan-out's envelope is translated once for all its browsers.
        # Envelopes up to the output cap: nothing larger could be sent anyway.
        self._encoder = Encoder(max(settings.websocket.max_output_bytes, 64 * 1024))
        # Package data (a few KB), read once; its script and stylesheet are /static/'s.
        self._page = (resources.files("shards.web") / "static" / "chat.html").read_bytes()

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/ws", self.upgrade)
        app.router.add_get("/chat", self.page)

    async def page(self, request: web.Request) -> web.StreamResponse:
        """The page (its script and stylesheet are /static/'s), for a signed-in user;
        anyone else goes to the sign-in page, which comes back here."""
        actor = await self._authenticate(request)
        if isinstance(actor, web.Response):
            if actor.status != 401:
                return actor
            return redirect(f"/signin?next={quote(request.path_qs, safe='')}")
        return web.Response(
            body=self._page, content_type="text/html", charset="utf-8", headers=SECURITY_HEADERS
        )

    async def upgrade(self, request: web.Request) -> web.StreamResponse:
        refused = self._guard.origin_refusal(request)
        if refused is not None:
            return refused
        actor = await self._authenticate(request)
        if isinstance(actor, web.Response):
            return actor
        token = request.get(CSRF_KEY, "")
        if token and not hmac.compare_digest(request.query.get(CSRF_PARAM, ""), token):
            # Signed in by the pages' cookie: the page proves it read the session's token.
            raise web.HTTPForbidden(text="the upgrade needs the session's csrf token\n")
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
        await self._audit.record(request, 101)
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
