"""The HTTP API's defences against cross-site requests (shards layer, aiohttp).

A browser that once signed in with HTTP Basic sends the credentials to any page that
asks, so a foreign page could post a form to the API. Three checks stop it:

* a body must be JSON (`application/json`): a plain HTML form cannot send that type
  without a CORS preflight, which this server never grants;
* a request that changes something and carries an `Origin` must come from the listener
  itself, `http.public_url` or `http.allowed_origins`;
* a request from a browser (it sends `Origin` or `Sec-Fetch-Site`) that changes something
  must carry `X-CSRF-Token`, read from GET /api/csrf by a page of an allowed origin.

Scripts (curl, the CLI) send no `Origin` and need no token.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from aiohttp import web

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_HEADER = "X-CSRF-Token"


def origin_of(url: str) -> str:
    """'https://chat.example.com:8443/x' -> 'https://chat.example.com:8443' (case folded)."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def token_for(ha1: str, user_uri: str) -> str:
    """A user's token: keyed by their stored HA1, so every worker derives the same one
    without a shared secret, and a password change voids it."""
    return hmac.new(ha1.encode(), f"pchat-csrf:{user_uri}".encode(), hashlib.sha256).hexdigest()


def from_browser(request: web.Request) -> bool:
    return "Origin" in request.headers or "Sec-Fetch-Site" in request.headers


class CsrfGuard:
    """Checks a request before its credentials are looked at: type and origin."""

    def __init__(self, allowed_origins: list[str], public_url: str) -> None:
        extra = [origin_of(o) for o in [*allowed_origins, public_url]]
        self._allowed = frozenset(o for o in extra if o)

    def refusal(self, request: web.Request, *, json_only: bool = True) -> web.Response | None:
        """The error response for a request refused before sign-in, or None. A route
        that takes raw bodies (file uploads) passes ``json_only=False``: the Origin check
        and the token then stand alone against a foreign form."""
        if request.method in SAFE_METHODS:
            return None
        if json_only and request.body_exists and request.content_type != "application/json":
            return _error(415, "request bodies must be JSON (Content-Type: application/json)")
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_ok(request, origin):
            return _error(403, "cross-origin requests are refused")
        return None

    def origin_refusal(self, request: web.Request) -> web.Response | None:
        """403 for an `Origin` other than the allowed ones, whatever the method: a
        WebSocket upgrade is a GET that opens a two-way channel carrying the cookie."""
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_ok(request, origin):
            return _error(403, "cross-origin requests are refused")
        return None

    def _origin_ok(self, request: web.Request, origin: str) -> bool:
        own = f"{request.scheme}://{request.host}".lower()
        given = origin_of(origin)
        return given != "" and (given == own or given in self._allowed)


def token_refusal(
    request: web.Request, expected: str, *, always: bool = False
) -> web.Response | None:
    """403 unless a browser's changing request carries the user's token; ``always``: any
    request's (one signed in by the session cookie: only browsers hold it, and a browser
    need not say so)."""
    if request.method in SAFE_METHODS or not (always or from_browser(request)):
        return None
    given = request.headers.get(TOKEN_HEADER, "")
    if given and hmac.compare_digest(given, expected):
        return None
    return _error(403, f"a browser's change needs the {TOKEN_HEADER} header (GET /api/csrf)")


def _error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)
