"""The HTTP access log (shards layer, aiohttp): one bounded record per request, no secrets.

aiohttp calls ``AccessLog.log`` once the response is sent, so the status and byte count are
what went out. A record holds the method, the path (never the query string, which may carry
a token), the status, the bytes, the time taken, the peer address and the signed-in user
(set by ``ManagementApi.authenticate``), never a header: Authorization holds a password.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

ACCESS_LOGGER = logging.getLogger("pchat.access")
# request[USER_KEY]: the signed-in user's URI, for this log only
USER_KEY = web.RequestKey("pchat_user", str)
# Field bounds: a request line may be 8 KiB, a log line should stay one screen line or two.
MAX_PATH_CHARS = 200
MAX_FIELD_CHARS = 100


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class AccessLog(AbstractAccessLogger):
    """Passed to aiohttp's AppRunner as ``access_log_class`` when ``log.access`` is on."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        method = _bounded(request.method, 16)
        path = _bounded(request.rel_url.path, MAX_PATH_CHARS)
        fields = {
            "method": method,
            "path": path,
            "status": response.status,
            "bytes": response.body_length,
            "ms": round(time * 1000, 1),
            "peer": _bounded(request.remote or "", MAX_FIELD_CHARS),
            "user": _bounded(str(request.get(USER_KEY, "")), MAX_FIELD_CHARS),
        }
        self.logger.info("%s %s %d", method, path, response.status, extra={"fields": fields})
