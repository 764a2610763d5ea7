"""A lean Redis (RESP2) connection for the hot paths: pipelined commands and pub/sub.

redis-py's PubSub costs about 13 µs per received message; reading the socket with a bare
hiredis.Reader about 1.4 µs (MEASUREMENTS.md). Commands written in one loop turn go out
in one write, so a burst of PUBLISHes costs one syscall.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

# Commands awaiting their reply on one connection. A Redis that stops answering turns
# into errors (503 at the edge) here instead of an ever-growing queue.
MAX_PENDING_COMMANDS = 50_000
CONNECT_TIMEOUT_S = 2.0

Message = Callable[[bytes, bytes], None]


def encode_command(args: tuple[bytes | str | int, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class RespError(Exception):
    """Redis answered with an error, or the connection is gone."""


class _RespProtocol(asyncio.Protocol):
    def __init__(self, on_reply: Callable[[Any], None], on_lost: Callable[[], None]) -> None:
        self._reader = hiredis.Reader()
        self._on_reply = on_reply
        self._on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._scheduled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._on_lost()

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        on_reply = self._on_reply
        while (reply := reader.gets()) is not False:
            on_reply(reply)

    def write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def flush(self) -> None:
        if self.transport is not None and self._out:
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def _flush(self) -> None:
        self._scheduled = False
        self.flush()


def tls_context(url: str) -> ssl.SSLContext | None:
    """The TLS context a ``rediss://`` URL asks for (None for redis:// and unix://).

    The query keys are redis-py's, so one URL serves both clients of a worker:
    ``ssl_ca_certs`` (the CA file; default: the system's), ``ssl_cert_reqs=none`` (no
    verification: for tests only), ``ssl_certfile`` and ``ssl_keyfile`` (a client
    certificate), ``ssl_check_hostname=false``.
    """
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return None
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    try:
        context = ssl.create_default_context(cafile=query.get("ssl_ca_certs"))
        if query.get("ssl_check_hostname", "true").lower() in ("false", "0", "no"):
            context.check_hostname = False
        if query.get("ssl_cert_reqs", "required").lower() in ("none", "cert_none"):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if "ssl_certfile" in query:
            context.load_cert_chain(query["ssl_certfile"], query.get("ssl_keyfile"))
    except (OSError, ssl.SSLError) as exc:
        raise RespError(f"Redis TLS settings unusable: {exc}") from exc
    return context


async def _open(url: str, protocol_factory: Callable[[], _RespProtocol]) -> _RespProtocol:
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    if parts.scheme == "unix":
        coro = loop.create_unix_connection(protocol_factory, parts.path)
    elif parts.scheme in ("redis", "rediss", ""):
        host = parts.hostname or "127.0.0.1"
        context = tls_context(url)
        tls: dict[str, Any] = {}
        if context is not None:
            tls = {"ssl": context, "server_hostname": host}
            tls["ssl_handshake_timeout"] = CONNECT_TIMEOUT_S
        coro = loop.create_connection(protocol_factory, host, parts.port or 6379, **tls)
    else:
        raise RespError(
            f"unsupported Redis URL scheme {parts.scheme!r} (redis://, rediss:// or unix://)"
        )
    try:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the connection and
        # drops a cancel that meets it, and the caller goes on as if never cancelled (a
        # worker's shutdown waited forever on its admin-notice listener that way).
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            _, protocol = await coro
    except ssl.SSLError as exc:
        raise RespError(f"Redis TLS handshake failed: {exc.reason or exc}") from exc
    return protocol


def _auth_and_db(url: str) -> list[tuple[bytes | str | int, ...]]:
    parts = urlsplit(url)
    commands: list[tuple[bytes | str | int, ...]] = []
    if parts.password:
        user = unquote(parts.username or "default")
        commands.append(("AUTH", user, unquote(parts.password)))
    db = parts.path.strip("/") if parts.scheme != "unix" else ""
    if db.isdigit() and db != "0":
        commands.append(("SELECT", db))
    return commands


class RespClient:
    """Pipelined commands on one connection; replies come back in order (FIFO futures)."""

    def __init__(self) -> None:
        self._proto: _RespProtocol | None = None
        self._pending: deque[asyncio.Future[Any]] = deque()
        self.closed = asyncio.Event()

    @classmethod
    async def connect(cls, url: str) -> RespClient:
        client = cls()
        client._proto = await _open(url, lambda: _RespProtocol(client._on_reply, client._on_lost))
        try:
            for command in _auth_and_db(url):
                await client.call(*command)
        except BaseException:
            client.close()  # a refused AUTH or SELECT: no half-open connection is left
            raise
        return client

    @property
    def connected(self) -> bool:
        return self._proto is not None and self._proto.transport is not None

    def call(self, *args: bytes | str | int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self.connected:
            future.set_exception(RespError("Redis connection is down"))
            return future
        if len(self._pending) >= MAX_PENDING_COMMANDS:
            future.set_exception(RespError("too many Redis commands in flight"))
            return future
        self._pending.append(future)
        assert self._proto is not None
        self._proto.write(encode_command(args))
        return future

    def flush(self) -> None:
        """Writes what is queued now instead of at the end of this loop turn."""
        if self._proto is not None:
            self._proto.flush()

    def _on_reply(self, reply: Any) -> None:
        if not self._pending:
            return
        future = self._pending.popleft()
        if future.done():
            return
        if isinstance(reply, hiredis.ReplyError):
            future.set_exception(RespError(str(reply)))
        else:
            future.set_result(reply)

    def _on_lost(self) -> None:
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(RespError("Redis connection lost"))
        self.closed.set()

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()


class RespSubscriber:
    """One subscription connection; ``subscribe`` resolves once Redis confirms it."""

    def __init__(self, on_message: Message, sharded: bool = False) -> None:
        self._on_message = on_message
        self._proto: _RespProtocol | None = None
        self._confirm: dict[bytes, list[asyncio.Future[None]]] = {}
        self.channels: set[bytes] = set()
        self.closed = asyncio.Event()
        # Sharded pub/sub (Redis 7, for Redis Cluster): SSUBSCRIBE, one command per channel
        # (channels of one command must share a slot), and pushes named smessage.
        self._sharded = sharded
        self._kind = b"smessage" if sharded else b"message"
        self._confirm_kind = b"ssubscribe" if sharded else b"subscribe"

    @classmethod
    async def connect(cls, url: str, on_message: Message, sharded: bool = False) -> RespSubscriber:
        sub = cls(on_message, sharded)
        auth = _auth_and_db(url)
        sub._proto = await _open(url, lambda: _RespProtocol(sub._on_reply, sub._on_lost))
        for command in auth:  # answered before any push; their replies are plain values
            if command[0] == "AUTH":
                sub._proto.write(encode_command(command))
        return sub

    @property
    def connected(self) -> bool:
        return self._proto is not None and self._proto.transport is not None

    async def subscribe(self, *channels: bytes, timeout: float = 2.0) -> None:
        if not self.connected:
            raise RespError("Redis connection is down")
        loop = asyncio.get_running_loop()
        waits = []
        for channel in channels:
            future: asyncio.Future[None] = loop.create_future()
            self._confirm.setdefault(channel, []).append(future)
            waits.append(future)
        self.channels.update(channels)
        assert self._proto is not None
        if self._sharded:
            for channel in channels:
                self._proto.write(encode_command(("SSUBSCRIBE", channel)))
        else:
            self._proto.write(encode_command(("SUBSCRIBE", *channels)))
        # asyncio.wait, not wait_for(gather(...)): a cancelled gather leaves an exception
        # nobody retrieves; here every future is settled on every path.
        try:
            done, pending = await asyncio.wait(waits, timeout=timeout)
        except asyncio.CancelledError:
            for future in waits:
                future.cancel()
            raise
        for future in pending:
            future.cancel()
        if pending:
            raise RespError("Redis did not confirm the subscription")
        for future in done:
            future.result()  # a refused AUTH or a lost connection: RespError

    def unsubscribe(self, *channels: bytes) -> None:
        self.channels.difference_update(channels)
        if self.connected and channels:
            assert self._proto is not None
            if self._sharded:
                for channel in channels:
                    self._proto.write(encode_command(("SUNSUBSCRIBE", channel)))
            else:
                self._proto.write(encode_command(("UNSUBSCRIBE", *channels)))

    def _on_reply(self, reply: Any) -> None:
        if type(reply) is list and len(reply) == 3:
            kind = reply[0]
            if kind == self._kind:
                self._on_message(reply[1], reply[2])
            elif kind == self._confirm_kind:
                for future in self._confirm.pop(reply[1], []):
                    if not future.done():
                        future.set_result(None)
            elif kind == b"sunsubscribe" and reply[1] in self.channels:
                # Not asked for: the channel's slot moved to another node (resharding or a
                # failover). The connection is closed so its owner re-subscribes where
                # the slot now lives, and fills what it missed.
                self.close()
        elif isinstance(reply, hiredis.ReplyError):  # a refused AUTH, or NOAUTH
            self._fail(RespError(str(reply)))

    def _fail(self, exc: RespError) -> None:
        for futures in self._confirm.values():
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
        self._confirm.clear()

    def _on_lost(self) -> None:
        self._fail(RespError("Redis connection lost"))
        self.closed.set()

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()


async def ping(url: str, timeout: float = 1.0) -> bool:
    with contextlib.suppress(OSError, RespError, asyncio.TimeoutError):
        client = await RespClient.connect(url)
        try:
            return bool(await asyncio.wait_for(client.call("PING"), timeout) == b"PONG")
        finally:
            client.close()
    return False
