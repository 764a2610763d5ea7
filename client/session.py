"""The client's SIP session: sign-in, dialog, XCCOS commands matched to replies, posts.

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
import ssl
from collections import deque
from collections.abc import Iterable
from typing import TypeVar, cast

from client.errors import SipError, XccosError, _check
from client.inbox import ChatMessage, _Inbox
from core.errors import PchatError
from core.sip import digest
from core.sip.codec import PING, BadMessage, SipCodec
from core.sip.message import SipMessage, encode_request, parse_name_addr, response_to
from core.xccos import build
from core.xccos.envelope import Notice, Post, Reply, decode_envelope
from core.xccos.xml import Element

_T = TypeVar("_T")

RETRY_503_ATTEMPTS = 8  # with backoff: about 30 s of an overloaded server before giving up
# The whole sign-in sequence (SUBSCRIBE, INVITE, the five commands, a followed room's bjoin
# and history) under one deadline: each step used to have its own 10 s timer, one timer
# per step and per reply is what a load generator signing in thousands paid for.
SIGNIN_TIMEOUT_S = 30.0


async def _within(fut: asyncio.Future[_T], timeout: float | None) -> _T:
    """``fut``'s result, within ``timeout`` s; None: the caller's deadline (an enclosing
    ``asyncio.timeout``) bounds the wait, no timer of its own."""
    if timeout is None:
        return await fut
    async with asyncio.timeout(timeout):
        return await fut


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
        self.ended = asyncio.Event()  # the session is over: the server's BYE or a lost connection
        self.bye_from_server = False
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
        self.ended.set()
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
        timeout: float | None = 10.0,
    ) -> SipMessage:
        """Sends one request (answering a digest challenge once) and returns the final response.
        ``timeout`` per response; None: the caller's deadline."""
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
                response = await _within(fut, timeout)
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

    async def provision(self, *, timeout: float | None = 10.0) -> bool:
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
            timeout=timeout,
        )
        _check(response)
        return b'"EnablePersistentChat">true' in response.body

    async def invite(
        self, session_expires: int | None = None, *, timeout: float | None = 10.0
    ) -> SipMessage:
        self._setup_call_id = secrets.token_hex(12)
        extra = [("Content-Type", "application/sdp"), ("Supported", "timer")]
        if session_expires:
            extra.append(("Session-Expires", str(session_expires)))
        response = await self.request(
            "INVITE", self.pool_uri, extra=extra, body=b"m=message 5060 sip null\r\n",
            timeout=timeout,
        )  # fmt: skip
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

    async def sign_in(self, *, timeout: float = SIGNIN_TIMEOUT_S) -> dict[str, object]:
        """The original client's whole sign-in; returns what each step answered. One
        deadline, ``timeout`` s, for the whole sequence (TimeoutError past it)."""
        async with asyncio.timeout(timeout):
            return await self._sign_in_steps()

    async def _sign_in_steps(self) -> dict[str, object]:
        if not await self.provision(timeout=None):
            raise SipError(403, "Forbidden", "persistent chat is not enabled for this user")
        await self.invite(timeout=None)
        ask = self.command
        info = await ask(
            "cmd:getserverinfo", f'<sib domain="{self.domain}" infoType="123"/>', timeout=None
        )
        sib = info.data.find("sib") if info.data is not None else None
        self.server_info = dict(sib.attrs) if sib is not None else {}
        members = await ask("cmd:getassociations", '<assoc type="member"/>', timeout=None)
        managers = await ask("cmd:getassociations", '<assoc type="manager"/>', timeout=None)
        followers = await ask("cmd:getassociations", '<assoc type="follower"/>', timeout=None)
        followed = _uris(followers.data)
        history: dict[str, list[ChatMessage]] = {}
        joined: list[str] = []
        if followed:
            chanibs = "".join(build.chanib(u) for u in followed)
            bjoin = await ask("cmd:bjoin", chanibs, timeout=None)
            joined = [c.get("uri") for c in _children(bjoin.data, "chanib")]
            for uri in joined:
                history[uri] = await self.history(uri, timeout=None)
        invitations = await ask(
            "cmd:getinv", f'<inv inviteId="1" domain="{self.domain}"/>', timeout=None
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
        self,
        inner: str,
        *,
        envid: int | None = None,
        timeout: float | None = 10.0,
        answered: asyncio.Future[Reply] | None = None,
    ) -> str:
        """Sends one INFO; retries 503 with backoff (same envid, so retries are safe).
        ``answered``: the rpl of a post, which the server sends before failing the INFO of a
        refused post; when it has come, the failure is the rpl's to tell."""
        envid = next(self._envid) if envid is None else envid
        body = build.envelope(envid, inner)
        delay = 0.05
        for _ in range(RETRY_503_ATTEMPTS):
            response = await self.request(
                "INFO", self._remote_target, in_dialog=True,
                extra=[("Content-Type", "text/plain")], body=body, timeout=timeout,
            )  # fmt: skip
            if answered is not None and answered.done():
                return str(envid)
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
        self, name: str, data: str = "", *, check: bool = True, timeout: float | None = 10.0
    ) -> Reply:
        """Sends one command and waits for its reply, ``timeout`` s for each (None: the
        caller's deadline)."""
        envid = next(self._envid)
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._replies[str(envid)] = fut
        try:
            await self.send_envelope(build.cmd(name, 1, data), envid=envid, timeout=timeout)
            reply = await _within(fut, timeout)
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
                await self.send_envelope(body, envid=envid, timeout=timeout, answered=fut)
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

    async def history(
        self, room: str, *, query: str = '<last cnt="25"/>', timeout: float | None = 10.0
    ) -> list[ChatMessage]:
        """bccontext; ``query`` is one of <last cnt/>, <before msgid cnt/>, <after msgid cnt/>,
        <search text cnt/>."""
        body = f"{build.chanib(room)}<bcq>{query}</bcq>"
        reply = await self.command("cmd:bccontext", body, timeout=timeout)
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
            self.bye_from_server = True
            self.ended.set()
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


def _children(el: Element | None, tag: str) -> list[Element]:
    return el.findall(tag) if el is not None else []


def _uris(data: Element | None) -> list[str]:
    return [c.get("uri") for c in _children(data, "chanib")]
