"""The audit records of the web parts (shards layer, aiohttp): one middleware for all.

Every request that may change something (any method but GET/HEAD/OPTIONS: the JSON API,
the file store's uploads, the pages' forms, sign-in and sign-out) and every WebSocket
upgrade is written to the audit log (shards/audit.py) once its answer is known and
before it is sent: who (the signed-in user, or the address a sign-in claimed), from
which address, what (the method and route, its parameters, the body's fields), and the
result (``ok``, ``refused`` for a 4xx, ``failed`` for a 5xx, with the status). A request
that names no user (no or a wrong session, a foreign origin before any sign-in, a
sign-in the throttle refused unchecked) is not recorded: anyone can send those, the
access log has them, and recording them would let a flood fill the disk.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from shards.audit import AuditLog
from shards.web.access import USER_KEY
from shards.web.csrf import SAFE_METHODS

# The user a request claims before it is signed in (the sign-in form's address).
CLAIMED_KEY = web.RequestKey("pchat_claimed_user", str)
WS_PATH = "/ws"
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def channel(path: str) -> str:
    """Which web part took the request: the ``via`` of its record."""
    if path == WS_PATH:
        return "websocket"
    if path.startswith("/api/files/") or (path.startswith("/api/rooms/") and "/files" in path):
        return "file-store"
    return "http-api" if path.startswith("/api/") else "web-page"


def result_of(status: int) -> str:
    return "ok" if status < 400 else "refused" if status < 500 else "failed"


async def _details(request: web.Request, via: str) -> object:
    """The body's fields (a form's or a JSON body's; bodies are cached by aiohttp, and
    capped at the listener's 64 KB), else the query's: an upload's bytes (whatever their
    type) are never read here. Secrets (password, csrf) are dropped by `AuditLog`."""
    if via in ("file-store", "websocket"):
        return dict(request.query) or None
    if request.content_type in FORM_TYPES and request.body_exists:
        form = await request.post()
        return {k: v for k, v in form.items() if isinstance(v, str)}
    if request.content_type == "application/json" and request.body_exists:
        with contextlib.suppress(msgspec.DecodeError, ValueError):
            return msgspec.json.decode(await request.read())
        return None
    return dict(request.query) or None


class WebAudit:
    """Writes the records of the web parts; None as the log: nothing is recorded."""

    def __init__(self, log: AuditLog | None) -> None:
        self._log = log

    async def record(self, request: web.Request, status: int) -> None:
        """The record of ``request`` answered with ``status``, if it names a user."""
        actor = request.get(USER_KEY) or request.get(CLAIMED_KEY)
        if self._log is None or not actor:
            return
        route = request.match_info.route.resource
        via = channel(request.path)
        method = "UPGRADE" if request.path == WS_PATH else request.method
        await asyncio.to_thread(
            self._log.record,
            actor=actor,
            via=via,
            source=request.remote or "?",
            action=f"{method} {route.canonical if route else request.path}",
            target="/".join(request.match_info.values()),
            details=await _details(request, via),
            result=result_of(status),
            status=status,
        )

    def middleware(self) -> Middleware:
        @web.middleware
        async def audited(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.method in SAFE_METHODS and request.path != WS_PATH:
                return await handler(request)
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                await self.record(request, exc.status)
                raise
            # An accepted upgrade was recorded as it opened (ChatSocket); this is its end.
            if response.status != 101:
                await self.record(request, response.status)
            return response

        return audited
