"""The worker's HTTP listener: health, metrics, the management API, files, the pages and
the browser chat client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

from aiohttp import web

from core.auth.filetoken import FileTokens
from core.auth.throttle import Throttle
from core.config import Settings
from core.files.base import FileStorage
from core.rooms.management import Management
from core.store.base import ChatStore
from shards import metrics
from shards.audit import AuditLog
from shards.web.api import ManagementApi
from shards.web.audit_trail import WebAudit
from shards.web.chat import ChatSocket
from shards.web.csrf import CsrfGuard
from shards.web.files import FileApi, Poster
from shards.web.html import static_routes
from shards.web.listen import file_base
from shards.web.pages_admin import AdminPages
from shards.web.pages_removal import RemovalPages
from shards.web.pages_rooms import RoomPages
from shards.web.pages_signin import PageGate
from shards.web.signin import Credentials, Sessions, load_key
from shards.worker.gateway import Gateway

HealthCheck = Callable[[], Awaitable[dict[str, object]]]
Changed = Callable[[], Awaitable[None]]


# A health probe of the store or Redis waits this long: a /healthz poll must answer fast.
HEALTH_TIMEOUT_S = 1.0


class Routes(Protocol):
    """A web part that adds its routes to the app (the pages, the sign-in)."""

    def routes(self, app: web.Application) -> None: ...


def make_app(
    health: HealthCheck,
    api: ManagementApi | None = None,
    files: FileApi | None = None,
    pages: Sequence[Routes] = (),
    audit: WebAudit | None = None,
) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        status = await health()
        ok = all(v is True for k, v in status.items() if k.endswith("_ok"))
        return web.json_response(status, status=200 if ok else 503)

    async def metrics_view(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")

    middlewares = [audit.middleware()] if audit is not None else []
    app = web.Application(client_max_size=64 * 1024, middlewares=middlewares)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    if api is not None:
        api.routes(app)
    if files is not None:
        files.routes(app)
    if pages:
        static_routes(app)
    for part in pages:
        part.routes(app)
    return app


async def store_answers(store: ChatStore) -> bool:
    """Whether the chat store answers within a second, for /healthz."""
    try:
        await asyncio.wait_for(store.revision(), HEALTH_TIMEOUT_S)
    except Exception:  # any failure of the store is what /healthz must report, not raise
        return False
    return True


async def sign_in(
    store: ChatStore, settings: Settings, throttle: Throttle, changed: Changed, storage: FileStorage
) -> tuple[ManagementApi, Sessions, CsrfGuard]:
    """The one sign-in of every web part (a worker's, the file service's): HTTP Basic
    through ``throttle``, the pages' session cookie (the install's key, so a cookie from
    a worker's page is good on the file service too), with the CSRF guard."""
    http = settings.http
    guard = CsrfGuard(http.allowed_origins, http.public_url)
    key = await asyncio.to_thread(load_key, Path(settings.session_key_path))
    sessions = Sessions(
        store, key, http.session_ttl_s, always_secure=http.public_url.startswith("https:")
    )
    api = ManagementApi(
        store, settings.domain, changed, throttle, guard,
        invitations_per_change=settings.limits.invitations_per_change, sessions=sessions,
        files=storage,
    )  # fmt: skip
    return api, sessions, guard


def file_api(
    store: ChatStore,
    settings: Settings,
    api: ManagementApi,
    storage: FileStorage,
    *,
    tokens: FileTokens | None,
    post: Poster,
    redirect: bool,
) -> FileApi:
    """The file routes, as a worker and the file service both serve them: the links
    point at ``file_base`` (the service's when it runs); ``redirect``: a worker's, whose
    transfers are sent to the service (FileApi.redirect_to)."""
    base = file_base(settings)
    return FileApi(
        store, settings, api.authenticate, storage, post=post, base_url=base, tokens=tokens,
        redirect_to=base if redirect and settings.file_service else "",
    )  # fmt: skip


async def web_app(
    store: ChatStore,
    settings: Settings,
    throttle: Throttle,
    changed: Changed,
    health: HealthCheck,
    *,
    storage: FileStorage,
    tokens: FileTokens | None,
    post: Poster,
    audit: AuditLog | None = None,
    gateway: Gateway | None = None,
) -> tuple[web.Application, FileApi]:
    """Every web part of a worker, wired to one sign-in: HTTP Basic, the session
    cookie and (files only) the signed file token, through the worker's throttle
    (shared with SIP), with one CSRF guard. With ``gateway`` (and websocket.enabled), the
    browser chat's sessions are held by it, as SIP sessions are. With the file service on,
    the file routes send transfers there (307)."""
    api, sessions, guard = await sign_in(store, settings, throttle, changed, storage)
    per_change = settings.limits.invitations_per_change
    trail = WebAudit(audit)  # every change made on the web, refused ones too
    files = file_api(store, settings, api, storage, tokens=tokens, post=post, redirect=True)
    gate = PageGate(Credentials(store, settings.domain, throttle), sessions, guard)
    mgmt = Management(store, invitations_per_change=per_change, files=storage)
    pages: list[Routes] = [
        gate,
        RoomPages(store, mgmt, gate, changed, max_upload_kb=settings.files.max_upload_kb),
        AdminPages(store, mgmt, gate, changed),
        RemovalPages(store, mgmt, gate, changed),
    ]
    if gateway is not None and settings.websocket.enabled:
        pages.append(ChatSocket(gateway, settings, guard, api.authenticate, trail))
    return make_app(health, api, files, pages, trail), files
