"""The worker's HTTP listener: health, metrics, the management API, files, the chat page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from shards import metrics
from shards.web.api import ManagementApi
from shards.web.chat import ChatSocket
from shards.web.files import FileApi

HealthCheck = Callable[[], Awaitable[dict[str, object]]]


def make_app(
    health: HealthCheck,
    api: ManagementApi | None = None,
    files: FileApi | None = None,
    chat: ChatSocket | None = None,
) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        status = await health()
        ok = all(v is True for k, v in status.items() if k.endswith("_ok"))
        return web.json_response(status, status=200 if ok else 503)

    async def metrics_view(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    if api is not None:
        api.routes(app)
    if files is not None:
        files.routes(app)
    if chat is not None:
        chat.routes(app)
    return app
