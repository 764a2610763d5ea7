"""What a worker and the file service share to serve HTTP: the sockets, TLS, the URLs
clients are told, the file token keys and the listener under the connection caps."""

from __future__ import annotations

import asyncio
import socket
import ssl

from aiohttp import web

from core.auth.filetoken import FileTokens
from core.config import Settings
from shards.claim import CannotStart
from shards.web.access import ACCESS_LOGGER, AccessLog
from shards.web.token_key import load_token_secret
from shards.worker.unauth import CappedProtocol, UnauthCaps


def listen_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        # Every worker listens on the same port; the kernel spreads connections (SO_REUSEPORT).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def server_tls(cert: str, key: str) -> ssl.SSLContext:
    """One TLS setup for SIP and HTTPS (TLS 1.2+, the stdlib's server defaults)."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    tls.load_cert_chain(cert, key)
    return tls


def _base(settings: Settings, public_url: str, port: int) -> str:
    base = public_url.rstrip("/")
    if not base and port > 0:
        host = "127.0.0.1" if settings.http.host in ("0.0.0.0", "::") else settings.http.host
        scheme = "https" if settings.http.tls_cert else "http"
        base = f"{scheme}://{host}:{port}"
    return base


def http_base(settings: Settings) -> str:
    """What clients are told the HTTP services' base URL is; "": none known."""
    return _base(settings, settings.http.public_url, settings.http.port)


def file_base(settings: Settings) -> str:
    """The base URL of the file routes clients are told (fileServiceUrl, file posts'
    links): the file service's when it runs, else the workers' HTTP base. (The
    supervisor turns a service_port of 0 into the free port it picked before any child
    starts, so every process names the same one.)"""
    if not settings.file_service:
        return http_base(settings)
    return _base(settings, settings.files.service_public_url, settings.files.service_port)


def file_tokens(settings: Settings) -> FileTokens | None:
    """The file-service tokens, with the install's secret; None without an HTTP listener."""
    if settings.http.port < 0:
        return None
    try:
        secret = load_token_secret(settings.file_token_key_path)
    except (OSError, ValueError) as exc:
        raise CannotStart(f"file token secret: {exc}") from exc
    return FileTokens(secret, settings.files.token_ttl_s)


async def serve_app(
    app: web.Application, settings: Settings, port: int, reuse: bool, caps: UnauthCaps
) -> tuple[web.AppRunner, asyncio.Server, int]:
    """The HTTP(S) listener of ``app`` on http.host:``port``, under ``caps``; (runner,
    server, the port bound). It is made here, not by aiohttp's SockSite, for the TLS
    handshake deadline SockSite cannot set."""
    http = settings.http
    runner = web.AppRunner(
        app,
        access_log=ACCESS_LOGGER if settings.log.access else None,
        access_log_class=AccessLog,
        keepalive_timeout=http.keepalive_timeout_s,
    )
    await runner.setup()
    assert runner.server is not None  # set by setup()
    sock = listen_socket(http.host, port, reuse)
    tls = server_tls(http.tls_cert, http.tls_key) if http.tls_cert else None
    inner = runner.server
    server = await asyncio.get_running_loop().create_server(
        lambda: CappedProtocol(inner(), caps),
        sock=sock,
        ssl=tls,
        ssl_handshake_timeout=(http.tls_handshake_timeout_s or None) if tls else None,
    )
    return runner, server, sock.getsockname()[1]
