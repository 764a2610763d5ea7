"""The load generator's client: a lean receive path on the raw bytes, and bound sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable

from client.session import PchatClient

_HEAD_END = b"\r\n\r\n"
_LENGTH = b"\r\nContent-Length:"
# The header lines a response copies from the request (RFC 3261 §8.2.6.2), as the server
# writes them: full names, one per line.
_COPIED_LINES = (b"Via:", b"From:", b"To:", b"Call-ID:", b"CSeq:")
_DIALOG_LINES = (b"From:", b"To:", b"Call-ID:")
MAX_DIALOG_LINES = 16  # dialogs whose copied lines a client keeps (it usually has one)
_OK_LINE = b"SIP/2.0 200 OK\r\n"
_OK_TAIL = b"\r\nContent-Length: 0\r\n\r\n"
_CHAT_OPEN = b"<chat>"
_CHAT_CLOSE = b"</chat>"


# Linux: bind() picks no port until connect() does. Without it every bind() to port 0
# searches for a port no other socket holds, which grows with the sockets already open
# (measured: 40 % of a load process's CPU at 8,000 connections).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def bound_socket(local_host: str) -> socket.socket:
    """A non-blocking TCP socket bound to ``local_host`` (the port is chosen at connect)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(OSError):  # not Linux: bind() picks the port itself
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((local_host, 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def numeric_ipv4(host: str) -> bool:
    """Is ``host`` a dotted IPv4 address (nothing to resolve)?"""
    try:
        socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return False
    return True


async def connect_numeric(sock: socket.socket, host: str, port: int) -> None:
    """A non-blocking connect to a numeric IPv4 address, without the resolver: uvloop's
    ``sock_connect`` asks getaddrinfo (in libuv's thread pool) on every call, even for
    127.0.0.1 (measured: 6.5 % of a load process signing in, in the thread hand-off)."""
    try:
        sock.connect((host, port))
        return
    except (BlockingIOError, InterruptedError):
        pass
    loop = asyncio.get_running_loop()
    writable: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def connected() -> None:
        if not writable.done():
            writable.set_result(None)

    loop.add_writer(fd, connected)
    try:
        await writable
    finally:
        loop.remove_writer(fd)
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:  # OSError picks the subclass by errno: ConnectionRefusedError and so on
        raise OSError(err, f"connect to {host}:{port}: {os.strerror(err)}")


class LeanClient(PchatClient):
    """A ``PchatClient`` with a lean receive path for load generation.

    Server INFOs that carry posts or notices (no reply) are framed, answered with 200 and
    counted on the raw bytes, without parsing SIP headers or XML; each post's ``<chat>``
    text goes to ``on_posts``, once per read. Everything else (responses, replies, BYE)
    takes the ordinary path, so sign-in, commands and posting behave exactly as in
    ``PchatClient``. The 200s of one read leave in one write.
    """

    def __init__(
        self,
        user: str,
        password: str,
        *,
        domain: str | None = None,
        on_posts: Callable[[list[bytes]], None] | None = None,
    ) -> None:
        super().__init__(user, password, domain=domain)
        self.on_posts = on_posts
        self.posts_received = 0
        self.notices_received = 0
        self.bytes_received = 0  # of the post-carrying INFOs: their size on the wire
        self._pending = b""
        self._raw = False  # framing the lean way failed once: the codec takes the stream
        self._dialog_lines: dict[bytes, bytes] = {}  # Call-ID line -> From, To, Call-ID lines

    @classmethod
    async def connect_lean(
        cls,
        host: str,
        port: int,
        user: str,
        password: str,
        *,
        domain: str | None = None,
        local_host: str | None = None,
        on_posts: Callable[[list[bytes]], None] | None = None,
    ) -> LeanClient:
        """Connects from ``local_host`` when given: each 127.0.0.x source address has its own
        ~28k ephemeral ports, so tens of thousands of sessions need several."""
        loop = asyncio.get_running_loop()
        factory = lambda: cls(user, password, domain=domain, on_posts=on_posts)  # noqa: E731
        if not local_host:
            _, client = await loop.create_connection(factory, host, port)
            return client
        sock = bound_socket(local_host)
        try:
            if numeric_ipv4(host):
                await connect_numeric(sock, host, port)
            else:
                await loop.sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        _, client = await loop.create_connection(factory, sock=sock)
        return client

    def data_received(self, data: bytes) -> None:
        if self._raw:
            super().data_received(data)
            return
        buf = self._pending + data if self._pending else data
        size = len(buf)
        pos = 0
        acks: list[bytes] = []
        chats: list[bytes] = []
        while pos < size:
            if buf[pos] == 13:  # a CRLF pong or keep-alive between messages
                if size - pos < 2:
                    break
                pos += 2 if buf[pos + 1] == 10 else 1
                continue
            end = buf.find(_HEAD_END, pos)
            if end < 0:
                break
            at = buf.find(_LENGTH, pos, end)
            if at < 0:
                self._raw = True  # not how pchat frames: let the codec judge the rest
                self._pending = b""
                self._flush_acks(acks, chats)
                super().data_received(buf[pos:])
                return
            line_end = buf.find(b"\r\n", at + 2)
            stop = end if line_end < 0 or line_end > end else line_end
            body_end = end + 4 + int(buf[at + len(_LENGTH) : stop])
            if body_end > size:
                break
            lean = buf.startswith(b"INFO ", pos) and self._lean_info(
                buf, pos, end, body_end, acks, chats
            )
            if not lean:  # responses, replies, BYE: the ordinary path
                super().data_received(buf[pos:body_end])
            pos = body_end
        self._pending = buf[pos:] if pos < size else b""
        self._flush_acks(acks, chats)

    def _lean_info(
        self,
        buf: bytes,
        start: int,
        head_end: int,
        body_end: int,
        acks: list[bytes],
        chats: list[bytes],
    ) -> bool:
        """Answers and counts a post or notice INFO; False for anything else (a reply)."""
        body_start = head_end + 4
        if buf.find(b"<rpl", body_start, body_end) >= 0:
            return False
        at = buf.find(_CHAT_OPEN, body_start, body_end)
        if at >= 0:
            self.bytes_received += body_end - start
            while at >= 0:
                close = buf.find(_CHAT_CLOSE, at, body_end)
                if close < 0:
                    break
                chats.append(buf[at + len(_CHAT_OPEN) : close])
                self.posts_received += 1
                at = buf.find(_CHAT_OPEN, close, body_end)
        elif buf.find(b"<ntc", body_start, body_end) >= 0:
            self.notices_received += 1
        else:
            return False
        acks.append(self._ack(buf, start, head_end))
        return True

    def _ack(self, buf: bytes, start: int, head_end: int) -> bytes:
        """The 200 for a server INFO. Its Via and CSeq change with every request, From, To
        and Call-ID only with the dialog: those are copied once per dialog and reused."""
        via = buf.find(b"\r\nVia:", start, head_end)
        cseq = buf.find(b"\r\nCSeq:", start, head_end)
        call = buf.find(b"\r\nCall-ID:", start, head_end)
        if via < 0 or cseq < 0 or call < 0 or buf.find(b"\r\nVia:", via + 2, head_end) >= 0:
            kept = [
                line
                for line in buf[start:head_end].split(b"\r\n")[1:]
                if line.startswith(_COPIED_LINES)
            ]
            return _OK_LINE + b"\r\n".join(kept) + _OK_TAIL
        key = buf[call : buf.find(b"\r\n", call + 2)]
        dialog = self._dialog_lines.get(key)
        if dialog is None:
            if len(self._dialog_lines) >= MAX_DIALOG_LINES:
                self._dialog_lines.clear()
            dialog = b"".join(
                b"\r\n" + line
                for line in buf[start:head_end].split(b"\r\n")[1:]
                if line.startswith(_DIALOG_LINES)
            )
            self._dialog_lines[key] = dialog
        return b"".join(
            (
                _OK_LINE,
                buf[via + 2 : buf.find(b"\r\n", via + 2)],
                dialog,
                buf[cseq : buf.find(b"\r\n", cseq + 2)],
                _OK_TAIL,
            )
        )

    def _flush_acks(self, acks: list[bytes], chats: list[bytes]) -> None:
        if acks and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(acks))
        if chats and self.on_posts is not None:
            self.on_posts(chats)

    def abort(self) -> None:
        """Drops the connection at once, without BYE: the end of a run with many sessions."""
        if self._transport is not None:
            self._transport.abort()
