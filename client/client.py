"""The pchat client library: sign-in, commands, replies, notices and posts over SIP/TCP.

One implementation serves `pchat chat`, the tests and the load generator. It speaks
exactly what XCCOS.md describes: digest sign-in, provisioning, INVITE/ACK, INFO
commands matched to their replies by envelope id, 503 retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import secrets
import socket
import ssl
from collections import deque
from collections.abc import Callable, Iterable
from typing import cast

from core.errors import PchatError
from core.sip import digest
from core.sip.codec import PING, BadMessage, SipCodec
from core.sip.message import SipMessage, encode_request, parse_name_addr, response_to
from core.xccos import build
from core.xccos.envelope import Notice, Post, Reply, decode_envelope
from core.xccos.xml import Element

# Posts and notices kept for the application to read; past it the oldest are dropped and
# counted, so a client that never reads cannot grow without bound.
MAX_INBOX = 10_000
RETRY_503_ATTEMPTS = 8  # with backoff: about 30 s of an overloaded server before giving up


class SipError(Exception):
    def __init__(self, status: int, reason: str, warning: str = "") -> None:
        super().__init__(f"{status} {reason}" + (f" ({warning})" if warning else ""))
        self.status = status
        self.reason = reason


class XccosError(Exception):
    def __init__(self, reply: Reply) -> None:
        detail = reply.data.text if reply.data is not None else ""
        super().__init__(f"{reply.name}: {reply.code} {reply.text} {detail}".strip())
        self.code = reply.code
        self.reply = reply


class ChatMessage:
    __slots__ = ("room", "author", "ts", "msgid", "text")

    def __init__(self, room: str, author: str, ts: str, msgid: int, text: str) -> None:
        self.room = room
        self.author = author
        self.ts = ts
        self.msgid = msgid
        self.text = text

    def __repr__(self) -> str:
        return f"ChatMessage({self.room!r}, {self.author!r}, {self.msgid}, {self.text!r})"


class _Inbox:
    """A bounded FIFO the application awaits on."""

    def __init__(self) -> None:
        self.items: deque[object] = deque()
        self.dropped = 0
        self._ready = asyncio.Event()

    def put(self, item: object) -> None:
        if len(self.items) >= MAX_INBOX:
            self.items.popleft()
            self.dropped += 1
        self.items.append(item)
        self._ready.set()

    async def get(self, timeout: float) -> object:
        while not self.items:
            self._ready.clear()
            await asyncio.wait_for(self._ready.wait(), timeout)
        return self.items.popleft()


class PchatClient(asyncio.Protocol):
    """A client connection. Use ``await PchatClient.connect(...)``, then ``sign_in()``."""

    def __init__(self, user: str, password: str, *, domain: str | None = None) -> None:
        self.uri = user if user.startswith("sip:") else f"sip:{user}"
        self.address = self.uri[4:]
        self.domain = domain or self.address.rpartition("@")[2]
        self.pool_uri = f"sip:pchat@{self.domain}"
        self._password = password
        self._codec = SipCodec(max_body_bytes=1 << 20)
        self._transport: asyncio.Transport | None = None
        self._cseq = itertools.count(1)
        self._envid = itertools.count(random.randrange(1, 1 << 30))
        self._tx: dict[int, asyncio.Future[SipMessage]] = {}
        self._replies: dict[str, asyncio.Future[Reply]] = {}
        self._from_tag = secrets.token_hex(6)
        self.call_id = ""
        self._remote_target = self.pool_uri
        self._to = f"<{self.pool_uri}>"
        self._local = "127.0.0.1:0"
        self._auth: str | None = None
        self.posts = _Inbox()
        self.notices = _Inbox()
        self.server_requests: deque[SipMessage] = deque(maxlen=100)  # recent, for tests
        self.responses: deque[SipMessage] = deque(maxlen=100)  # recent, for tests
        self.closed = asyncio.Event()
        self.server_info: dict[str, str] = {}
        self.server_worker = -1  # which pchat worker holds this connection, when it says
        self.retries_503 = 0  # 503s this client met and retried (SIP or XCCOS)

    # -- connection -------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        user: str,
        password: str,
        *,
        domain: str | None = None,
        tls: ssl.SSLContext | None = None,
        local_addr: tuple[str, int] | None = None,
    ) -> PchatClient:
        """Connects over TCP, or TLS when ``tls`` is given (SIP over TLS); ``local_addr``
        picks the source address (tests: 127.0.0.2 is another client machine)."""
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(
            lambda: cls(user, password, domain=domain), host, port, ssl=tls, local_addr=local_addr
        )
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("sockname")
        if isinstance(sock, tuple):
            self._local = f"{sock[0]}:{sock[1]}"

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        futures: list[asyncio.Future[SipMessage] | asyncio.Future[Reply]] = [
            *self._tx.values(),
            *self._replies.values(),
        ]
        for fut in futures:
            if not fut.done():
                fut.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        for item in self._codec.feed(data):
            if item is PING or isinstance(item, BadMessage) or not isinstance(item, SipMessage):
                continue
            if item.is_request:
                self._on_request(item)
            else:
                self.responses.append(item)
                try:
                    fut = self._tx.get(item.cseq[0])
                except PchatError:  # a 400 that echoes the malformed CSeq it refuses
                    continue
                if fut is not None and not fut.done() and item.status >= 200:
                    fut.set_result(item)

    async def raw_response(
        self, data: bytes, call_id: str, cseq: int | None = None, timeout: float = 5.0
    ) -> SipMessage:
        """Sends hand-made bytes and waits for the response with that Call-ID (tests)."""
        self.responses.clear()
        self.send_raw(data)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for response in self.responses:
                if response.call_id == call_id and cseq in (None, response.cseq[0]):
                    self.responses.remove(response)
                    return response
            if self.closed.is_set():
                raise ConnectionError("connection closed")
            await asyncio.sleep(0.01)
        raise TimeoutError(f"no response for Call-ID {call_id}")

    def send_raw(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)

    async def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            if self.call_id:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        self.request("BYE", self._remote_target, in_dialog=True), 2
                    )
            self._transport.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.closed.wait(), 2)

    # -- SIP requests -----------------------------------------------------------------------

    def _headers(
        self, method: str, cseq: int, in_dialog: bool, extra: Iterable[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        to = self._to if in_dialog else f"<{self.pool_uri}>"
        return [
            ("Via", f"SIP/2.0/TCP {self._local};branch=z9hG4bK{secrets.token_hex(8)}"),
            ("Max-Forwards", "70"),
            ("From", f"<{self.uri}>;tag={self._from_tag}"),
            ("To", to),
            ("Call-ID", self.call_id if in_dialog else self._setup_call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<sip:{self.address.partition('@')[0]}@{self._local};transport=tcp>"),
            *extra,
        ]

    _setup_call_id = ""

    async def request(
        self,
        method: str,
        uri: str,
        *,
        in_dialog: bool = False,
        extra: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        timeout: float = 10.0,
    ) -> SipMessage:
        """Sends one request (answering a digest challenge once) and returns the final response."""
        extra = list(extra)
        if self._transport is None or self._transport.is_closing():
            raise ConnectionError("connection closed")
        for _ in range(2):
            cseq = next(self._cseq)
            headers = self._headers(method, cseq, in_dialog, extra)
            if self._auth:
                headers.append(("Authorization", self._auth))
            fut: asyncio.Future[SipMessage] = asyncio.get_running_loop().create_future()
            self._tx[cseq] = fut
            self.send_raw(encode_request(method, uri, headers, body))
            try:
                response = await asyncio.wait_for(fut, timeout)
            finally:
                self._tx.pop(cseq, None)
            if response.status != 401:
                return response
            self._auth = self._answer(response, method, uri)
        return response

    def _answer(self, response: SipMessage, method: str, uri: str) -> str:
        challenges = response.get_all("WWW-Authenticate")
        if not challenges:
            raise SipError(401, "Unauthorized", "no challenge")
        chosen = next((c for c in challenges if "SHA-256" in c), challenges[0])
        return digest.authorization(chosen, method, uri, self.address, self._password)

    # -- sign-in (XCCOS.md §6) --------------------------------------------------------------

    async def provision(self) -> bool:
        """SUBSCRIBE provisioning: is persistent chat enabled for this user?"""
        self._setup_call_id = secrets.token_hex(12)
        response = await self.request(
            "SUBSCRIBE",
            self.uri,
            extra=[
                ("Event", "vnd-microsoft-provisioning-v2"),
                ("Expires", "0"),
                ("Accept", "application/vnd-microsoft-roaming-provisioning-v2+xml"),
            ],
        )
        _check(response)
        return b'"EnablePersistentChat">true' in response.body

    async def invite(self, session_expires: int | None = None) -> SipMessage:
        self._setup_call_id = secrets.token_hex(12)
        extra = [("Content-Type", "application/sdp"), ("Supported", "timer")]
        if session_expires:
            extra.append(("Session-Expires", str(session_expires)))
        response = await self.request(
            "INVITE", self.pool_uri, extra=extra, body=b"m=message 5060 sip null\r\n"
        )
        _check(response)
        self.call_id = self._setup_call_id
        server = response.get("Server") or ""
        if "(worker " in server:
            self.server_worker = int(server.rpartition(" ")[2].rstrip(")"))
        self._to = response.get("To") or f"<{self.pool_uri}>"
        contact = response.get("Contact")
        if contact:
            self._remote_target = parse_name_addr(contact)[1]
        cseq = response.cseq[0]
        ack = self._headers("ACK", cseq, True, ())
        self.send_raw(encode_request("ACK", self._remote_target, ack))
        return response

    async def sign_in(self) -> dict[str, object]:
        """The original client's whole sign-in; returns what each step answered."""
        if not await self.provision():
            raise SipError(403, "Forbidden", "persistent chat is not enabled for this user")
        await self.invite()
        info = await self.command(
            "cmd:getserverinfo", f'<sib domain="{self.domain}" infoType="123"/>'
        )
        sib = info.data.find("sib") if info.data is not None else None
        self.server_info = dict(sib.attrs) if sib is not None else {}
        members = await self.command("cmd:getassociations", '<assoc type="member"/>')
        managers = await self.command("cmd:getassociations", '<assoc type="manager"/>')
        followers = await self.command("cmd:getassociations", '<assoc type="follower"/>')
        followed = _uris(followers.data)
        history: dict[str, list[ChatMessage]] = {}
        joined: list[str] = []
        if followed:
            bjoin = await self.command("cmd:bjoin", "".join(build.chanib(u) for u in followed))
            joined = [c.get("uri") for c in _children(bjoin.data, "chanib")]
            for uri in joined:
                history[uri] = await self.history(uri)
        invitations = await self.command(
            "cmd:getinv", f'<inv inviteId="1" domain="{self.domain}"/>'
        )
        return {
            "server_info": self.server_info,
            "member": _uris(members.data),
            "manager": _uris(managers.data),
            "joined": joined,
            "history": history,
            "invitations": [dict(i.attrs) for i in _children(invitations.data, "inv")],
        }

    # -- XCCOS --------------------------------------------------------------------------------

    async def send_envelope(
        self, inner: str, *, envid: int | None = None, timeout: float = 10.0
    ) -> str:
        """Sends one INFO; retries 503 with backoff (same envid, so retries are safe)."""
        envid = next(self._envid) if envid is None else envid
        body = build.envelope(envid, inner)
        delay = 0.05
        for _ in range(RETRY_503_ATTEMPTS):
            response = await self.request(
                "INFO", self._remote_target, in_dialog=True,
                extra=[("Content-Type", "text/plain")], body=body, timeout=timeout,
            )  # fmt: skip
            if response.status != 503:
                _check(response)
                return str(envid)
            self.retries_503 += 1
            retry_after = response.get("Retry-After")
            wait = float(retry_after) if retry_after and retry_after.isdigit() else delay
            await asyncio.sleep(min(wait, delay) + random.random() * delay)
            delay = min(delay * 2, 2.0)
        raise SipError(503, "Service Unavailable", "gave up after retries")

    async def command(
        self, name: str, data: str = "", *, check: bool = True, timeout: float = 10.0
    ) -> Reply:
        envid = next(self._envid)
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._replies[str(envid)] = fut
        try:
            await self.send_envelope(build.cmd(name, 1, data), envid=envid, timeout=timeout)
            reply = await asyncio.wait_for(fut, timeout)
        finally:
            self._replies.pop(str(envid), None)
        if check and reply.code != 200:
            raise XccosError(reply)
        return reply

    async def post_envelope(
        self, room: str, text: str, *, envid: int | None = None, timeout: float = 10.0
    ) -> Reply:
        """Posts and waits for rpl:grpchat; a 503 reply (an owner restarting) is retried with
        backoff under the same ``envid``, which the server stores once."""
        envid = next(self._envid) if envid is None else envid
        delay = 0.05
        for _ in range(RETRY_503_ATTEMPTS):
            fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
            self._replies[str(envid)] = fut
            try:
                body = build.post(room, self.uri, text)
                await self.send_envelope(body, envid=envid, timeout=timeout)
                reply = await asyncio.wait_for(fut, timeout)
            finally:
                self._replies.pop(str(envid), None)
            if reply.code != 503:
                return reply
            self.retries_503 += 1
            await asyncio.sleep(delay + random.random() * delay)
            delay = min(delay * 2, 2.0)
        return reply

    async def post(self, room: str, text: str) -> int:
        """Posts; returns the msgid once the server says it is durable."""
        reply = await self.post_envelope(room, text)
        if reply.code != 200:
            raise XccosError(reply)
        el = reply.data.find("grpchat") if reply.data is not None else None
        return int(el.get("msgid")) if el is not None else 0

    async def join(self, room: str) -> Reply:
        return await self.command("cmd:join", build.chanib(room))

    async def part(self, room: str) -> Reply:
        return await self.command("cmd:part", build.chanib(room))

    async def follow(self, room: str) -> Reply:
        return await self.command("cmd:follow", build.chanib(room))

    async def search(self, criteria: str) -> list[dict[str, str]]:
        reply = await self.command(
            "cmd:chansrch",
            f'<qib qtype="BYNAME" criteria="{build.esc(criteria)}" extended="false"/>',
        )
        return [dict(c.attrs) for c in _children(reply.data, "chanib")]

    async def history(self, room: str, *, query: str = '<last cnt="25"/>') -> list[ChatMessage]:
        """bccontext; ``query`` is one of <last cnt/>, <before msgid cnt/>, <after msgid cnt/>,
        <search text cnt/>."""
        reply = await self.command("cmd:bccontext", f"{build.chanib(room)}<bcq>{query}</bcq>")
        chan = reply.data.find("chanib") if reply.data is not None else None
        out = []
        for m in _children(chan, "msg"):
            chat = m.find("chat")
            out.append(
                ChatMessage(
                    m.get("chanUri"),
                    m.get("author"),
                    m.get("ts"),
                    int(m.get("msgid")),
                    chat.text if chat else "",
                )
            )
        return out

    async def next_post(self, timeout: float = 5.0) -> ChatMessage:
        item = await self.posts.get(timeout)
        assert isinstance(item, ChatMessage)
        return item

    async def next_notice(self, timeout: float = 5.0) -> Notice:
        item = await self.notices.get(timeout)
        assert isinstance(item, Notice)
        return item

    # -- server requests ------------------------------------------------------------------------

    def _on_request(self, msg: SipMessage) -> None:
        self.server_requests.append(msg)
        if msg.method == "ACK":
            return
        self.send_raw(response_to(msg, 200))
        if msg.method == "BYE":
            self.call_id = ""
            return
        if msg.method != "INFO" or not msg.body:
            return
        envelope = decode_envelope(msg.body, max_bytes=1 << 20)
        for item in envelope.items:
            if isinstance(item, Reply):
                fut = self._replies.get(item.command_envid)
                if fut is not None and not fut.done():
                    fut.set_result(item)
            elif isinstance(item, Post):
                self.posts.put(
                    ChatMessage(
                        item.chan_uri, item.author, item.ts, int(item.msgid or 0), item.text
                    )
                )
            elif isinstance(item, Notice):
                self.notices.put(item)


def _check(response: SipMessage) -> None:
    if response.status >= 300:
        raise SipError(response.status, response.reason, response.get("Warning") or "")


def _children(el: Element | None, tag: str) -> list[Element]:
    return el.findall(tag) if el is not None else []


def _uris(data: Element | None) -> list[str]:
    return [c.get("uri") for c in _children(data, "chanib")]


# -- the load generator's client ------------------------------------------------------------------

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
