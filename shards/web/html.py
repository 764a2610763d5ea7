"""HTML for the web pages: one escaping template helper and the shared layout (shards layer).

Every value put into a page goes through `esc` unless it is already `Markup` (made by
`render` or `esc` itself), so a room name like ``<script>`` is shown, never run. The pages
load only this server's own stylesheet and script (`/static/`), and the Content-Security-
Policy forbids anything else, inline script included: they work offline, and an injected
tag could not run even if an escape were missed.
"""

from __future__ import annotations

import html
import string
from collections.abc import Iterable
from pathlib import Path

from aiohttp import web

from core.errors import PchatError

STATIC_DIR = Path(__file__).with_name("static")
STATIC_FILES = {
    "pages.css": "text/css",
    "pages.js": "text/javascript",
    "chat.css": "text/css",  # the chat client (GET /chat, shards/web/chat.py)
    "chat.js": "text/javascript",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages show who may do what: never from a cache
}


class Markup(str):
    """Text that is already HTML: `esc` passes it through unchanged."""

    __slots__ = ()


def esc(value: object) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def render(template: str, **values: object) -> Markup:
    """``string.Template`` with every ``$value`` escaped (Markup values kept as they are)."""
    return Markup(string.Template(template).substitute({k: esc(v) for k, v in values.items()}))


def join(parts: Iterable[Markup], sep: str = "\n") -> Markup:
    return Markup(sep.join(esc(p) for p in parts))


def options(choices: Iterable[tuple[str, str]], selected: str) -> Markup:
    """``<option>``s of (value, label) pairs, ``selected`` marked."""
    return join(
        render(
            '<option value="$v"$sel>$label</option>',
            v=value,
            label=label,
            sel=Markup(" selected" if value == selected else ""),
        )
        for value, label in choices
    )


_LAYOUT = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title · pchat</title>
<link rel="stylesheet" href="/static/pages.css">
<script src="/static/pages.js" defer></script>
</head>
<body>
<header>$nav</header>
<main id="main">
<h1>$title</h1>
$notice
$body
</main>
</body>
</html>
"""

_NAV = """<nav aria-label="pchat"><a href="/rooms">My Rooms</a>$admin
<span class="who">$user</span>
<form method="post" action="/signout" class="inline">
<input type="hidden" name="csrf" value="$csrf">
<button type="submit">Sign out</button></form></nav>"""

_ADMIN_NAV = '<a href="/admin/categories">Categories</a> <a href="/admin/users">Users</a>'


class Viewer:
    """Who looks at a page: shown in the navigation, with the form token of their session."""

    __slots__ = ("admin", "csrf", "uri")

    def __init__(self, uri: str, csrf: str, *, admin: bool) -> None:
        self.uri = uri
        self.csrf = csrf
        self.admin = admin


def page(
    title: str,
    body: Markup,
    viewer: Viewer | None = None,
    *,
    status: int = 200,
    notice: str = "",
    error: bool = False,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A whole page in the layout; ``notice`` is shown above the body (as an alert if
    ``error``), where a screen reader announces it."""
    nav = Markup("")
    if viewer is not None:
        nav = render(
            _NAV,
            user=viewer.uri.removeprefix("sip:"),
            csrf=viewer.csrf,
            admin=Markup(_ADMIN_NAV if viewer.admin else ""),
        )
    shown = Markup("")
    if notice:
        role, cls = ("alert", "notice error") if error else ("status", "notice")
        shown = render('<p role="$role" class="$cls">$text</p>', role=role, cls=cls, text=notice)
    text = render(_LAYOUT, title=title, nav=nav, notice=shown, body=body)
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


def refusal(title: str, viewer: Viewer | None, exc: PchatError) -> web.Response:
    """The page of a refused request: the error's status, its words (or its reason) as an
    alert. The room and the admin pages answer every refusal with it."""
    return page(title, Markup(""), viewer, status=exc.sip_status,
                notice=str(exc) or exc.reason, error=True)  # fmt: skip


def static_routes(app: web.Application) -> None:
    """/static/<name>: the pages' stylesheet and script, read once (a few KB)."""
    bodies = {name: (STATIC_DIR / name).read_bytes() for name in STATIC_FILES}

    async def serve(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in bodies:
            raise web.HTTPNotFound()
        return web.Response(
            body=bodies[name],
            content_type=STATIC_FILES[name],
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=300"},
        )

    app.router.add_get("/static/{name}", serve)
