"""SIP over one TCP connection: framing, bounded output, the INFO hot path (HS-2).

The signalling (sign-in, provisioning, INVITE/UPDATE/BYE) is the sans-IO
``core.sip.useragent.UserAgent``; this protocol feeds it, keeps the sessions it opens and
sends what it answers.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from functools import partial
from typing import cast

from core.errors import BadRequest, FramingLost, PchatError, QuotaExceeded
from core.sip.codec import PING, BadMessage, SipCodec
from core.sip.dialog import Dialog
from core.sip.message import SipMessage
from core.sip.useragent import METHODS, Endpoint, UserAgent
from core.store.base import UserRecord
from core.xccos.envelope import Envelope, Post, decode_envelope, decode_post_fast
from shards.worker.answer import PostAnswer
from shards.worker.gateway import Gateway
from shards.worker.session import Session

log = logging.getLogger(__name__)

XCCOS_TYPES = ("text/plain", "application/xml", "text/xml")
# Requests waiting behind a sign-in or an INVITE being set up: a real client sends one or
# two; more means a client that does not wait for answers.
MAX_CONTROL_QUEUE = 16


class SipConnection(asyncio.Protocol):
    """One client connection. ``data_received`` never awaits: control requests (sign-in,
    INVITE, SUBSCRIBE...) go through a small ordered queue, INFOs straight to admission."""

    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway
        s = gateway.settings.sip
        self._codec = SipCodec(
            max_header_bytes=s.max_header_bytes,
            max_body_bytes=s.max_body_bytes,
            drop_2xx_responses=True,  # only 481/487 answers to our INFOs matter (§1.3)
        )
        self._max_output = s.max_output_bytes
        self._grace_s = s.session_grace_s
        self._sessionless_s = s.sessionless_timeout_s
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flush_scheduled = False
        self._closed = False
        self._peer = ""
        self._ua = UserAgent(
            gateway.ua_settings,
            self,
            Endpoint(peer="", local="127.0.0.1:5041"),  # the real one in connection_made
            self.send,
            throttle=gateway.throttle,
            on_error=gateway.metrics.error,
        )
        self.sessions: dict[str, Session] = {}
        self._control: deque[SipMessage] = deque()
        self._control_task: asyncio.Task[None] | None = None
        self._signin_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None  # signed in, no session
        self._place: int | None = None  # its place in the gateway's unauthenticated caps

    # -- transport events -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._gw.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # A fixed kernel send buffer (no autotuning up to megabytes): what one client may
            # leave unread is bounded by it plus max_output_bytes in our own buffer.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._max_output)
            # A reply INFO right after its 200 OK must not wait for the client's delayed ACK
            # (Nagle: 40 ms); stdlib asyncio only sets this for sockets made with proto 6.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self._peer = peer[0] if isinstance(peer, tuple) else "local"
        endpoint = Endpoint(
            peer=self._peer,
            local=f"{local[0]}:{local[1]}" if isinstance(local, tuple) else "127.0.0.1:5041",
            tls=transport.get_extra_info("ssl_object") is not None,
        )
        self._ua.endpoint = endpoint
        self._place = self._gw.unauth.admit(self._peer, self.abort)
        if self._place is None:
            self.abort()  # over a cap: closed at once, not left in the listen queue
            return
        loop = asyncio.get_running_loop()
        self._signin_timer = loop.call_later(
            self._gw.settings.sip.unauth_timeout_s, self._signin_timeout
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._gw.connections.discard(self)
        self._signed_in()
        for timer in (self._signin_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        if self._control_task is not None:
            self._control_task.cancel()
        for session in list(self.sessions.values()):
            self._end_session(session, False)

    def data_received(self, data: bytes) -> None:
        try:
            items = self._codec.feed(data)
        except FramingLost as exc:
            log.info("closing %s: framing lost (%s)", self._peer, exc)
            self.abort()
            return
        for item in items:
            if item is PING:
                self.send(b"\r\n")  # RFC 5626 §4.4.1: a CRLF pong
            elif isinstance(item, BadMessage):
                if item.message is not None and item.message.is_request:
                    self._ua.reply(item.message, item.status, warning=item.reason)
            elif isinstance(item, SipMessage):
                if item.is_request:
                    self._on_request(item)
                else:
                    self._on_response(item)

    # -- output ---------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queues bytes; all that is queued in one loop turn goes out in one write."""
        if self._closed:
            return
        self._out.append(data)
        self._out_bytes += len(data)
        transport = self._transport
        if transport is not None and (
            self._out_bytes + transport.get_write_buffer_size() > self._max_output
        ):
            self._cut_off()
            return
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._gw.want_flush(self)

    def flush(self) -> None:
        """Writes what this loop turn queued (called by the gateway, once per turn)."""
        self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport = self._transport
        if self._closed or transport is None or not self._out:
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        self._out_bytes = 0
        transport.write(data)

    def _cut_off(self) -> None:
        """A client that stopped reading: cut off as its output is queued, before the
        bytes are held (every reply is built within a budget below the cap)."""
        log.warning(
            "closing %s (%s): slow consumer over %d bytes", self._peer, self.user, self._max_output
        )
        self._gw.metrics.slow_consumers.inc()
        self._out.clear()
        self._out_bytes = 0
        self.abort()

    def close(self) -> None:
        """Sends what is queued (a final error response), then closes."""
        self._flush()
        if self._transport is not None and not self._closed:
            self._closed = True
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None and not self._closed:
            self._closed = True
            self._transport.abort()

    @property
    def user(self) -> str | None:
        return self._ua.user

    @property
    def signed_in_ha1(self) -> dict[str, str]:
        return self._ua.signed_in_ha1

    # -- requests -------------------------------------------------------------------------

    def _on_request(self, msg: SipMessage) -> None:
        method = msg.method
        self._gw.metrics.request(method if method in METHODS else "OTHER")
        if method == "ACK":
            return  # ends the INVITE transaction; nothing to answer
        if self.user is not None and method == "INFO" and not self._control:
            self._on_info(msg)
            return
        if len(self._control) >= MAX_CONTROL_QUEUE:
            self._ua.reply(
                msg, 503, warning="too many requests in flight", extra=self._retry_after()
            )
            return
        self._control.append(msg)
        if self._control_task is None:
            self._control_task = asyncio.get_running_loop().create_task(self._run_control())

    async def _run_control(self) -> None:
        ua = self._ua
        try:
            while self._control and not self._closed:
                msg = self._control.popleft()
                try:
                    if await ua.handle(msg):
                        self._on_info(msg)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception(
                        "bug handling %s from %s; closing the connection", msg.method, self._peer
                    )
                    self.abort()
                if ua.user is not None and self._signin_timer is not None:
                    self._signin_timer.cancel()
                    self._signin_timer = None
                    self._watch_sessionless()
                    self._signed_in()
                if ua.wants_close:
                    self.close()
        finally:
            self._control_task = None

    def _signed_in(self) -> None:
        """Signed in or closed: the connection no longer counts against the caps."""
        if self._place is not None:
            self._gw.unauth.release(self._place)
            self._place = None

    def _signin_timeout(self) -> None:
        if self.user is None:
            log.info("closing %s: no sign-in within the time limit", self._peer)
            self.abort()

    def _watch_sessionless(self) -> None:
        """A signed-in connection without a session closes after sip.sessionless_timeout_s."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if not self.sessions and self._sessionless_s > 0 and not self._closed:
            self._idle_timer = asyncio.get_running_loop().call_later(
                self._sessionless_s, self._sessionless_timeout
            )

    def _sessionless_timeout(self) -> None:
        if not self.sessions:
            log.info("closing %s (%s): signed in without a session too long", self._peer, self.user)
            self.close()

    def sign_out(self, why: str) -> None:
        """Ends every session with BYE and closes: the sign-in is no longer valid."""
        log.info("signing out %s (%s): %s", self._peer, self.user, why)
        for session in list(self.sessions.values()):
            self._end_session(session, True)
        self.close()

    # -- UaHost: the user agent's view of the worker ------------------------------------------

    async def user_record(self, uri: str) -> UserRecord | None:
        return await self._gw.store.get_user(uri)

    def open_session(self, dialog: Dialog, user: str, expires_s: int) -> None:
        limits = self._gw.settings.limits
        per_conn, per_user = limits.sessions_per_connection, limits.sessions_per_user
        if per_conn and len(self.sessions) >= per_conn:
            raise QuotaExceeded(f"at most {per_conn} sessions per connection")
        if per_user and len(self._gw.sessions_of(user)) >= per_user:
            raise QuotaExceeded(f"at most {per_user} sessions per user; end one first")
        session = Session(
            host=self._gw,
            dialog=dialog,
            user=user,
            session_id=self._gw.new_session_id(),
            gateway=self._gw.worker_id,
            send=self.send,
            end=self._end_session,
        )
        session.pool_uri = dialog.local_uri
        self.sessions[dialog.call_id] = session
        self._watch_sessionless()
        self._gw.add_session(session)
        self._gw.load_follows(session)
        session.refresh(expires_s + self._grace_s)

    def refresh_session(self, call_id: str, expires_s: int) -> bool:
        session = self.sessions.get(call_id)
        if session is None:
            return False
        session.refresh(expires_s + self._grace_s)
        return True

    def close_session(self, call_id: str) -> bool:
        session = self.sessions.get(call_id)
        if session is None:
            return False
        self._end_session(session, False)
        return True

    def _retry_after(self) -> list[tuple[str, str]]:
        return [("Retry-After", str(self._gw.settings.limits.retry_after_s))]

    def _on_info(self, msg: SipMessage) -> None:
        """The hot path: admission, decode, 200 at once (for posts: once they have their
        outcome), the reply later (XCCOS.md §1.3)."""
        session = self.sessions.get(msg.call_id)
        if session is None:
            self._ua.reply(msg, 481)
            return
        if not self._ua.from_is_user(msg):
            self._ua.reply(msg, 403, warning="From is not the signed-in user")
            return
        ctype = (msg.get("Content-Type") or "text/plain").split(";")[0].strip().lower()
        if ctype not in XCCOS_TYPES:
            self._ua.reply(msg, 415, extra=[("Accept", "text/plain")])
            return
        if not session.can_queue():
            self._gw.metrics.rejected("session")
            self._ua.reply(msg, 503, warning="too many commands queued", extra=self._retry_after())
            return
        ticket = self._gw.admission.admit()
        if ticket is None:
            self._ua.reply(msg, 503, warning="server busy", extra=self._retry_after())
            return
        with ticket:  # the place goes back at the end of this block unless submit holds it
            try:
                envelope = self._decode(msg.body)
            except PchatError as exc:
                self._ua.reply(msg, exc.sip_status, warning=str(exc) or "not an XCCOS envelope")
                return
            if not envelope.items:
                self._ua.reply(msg, 400, warning="empty XCCOS envelope")
                return
            answer = None
            if any(isinstance(item, Post) for item in envelope.items):
                # Only posts wait: their INFO fails when they are refused (answer.py).
                answer = PostAnswer(partial(self._answer_posts, msg), session.send_inner)
            else:
                self._ua.reply(msg, 200)
            session.submit(envelope, ticket, answer)

    def _answer_posts(self, msg: SipMessage, refusal: PchatError | None) -> None:
        if refusal is None:
            self._ua.reply(msg, 200)
            return
        extra = self._retry_after() if refusal.sip_status == 503 else []
        self._ua.reply(msg, refusal.sip_status, warning=str(refusal) or refusal.reason, extra=extra)

    def _decode(self, body: bytes) -> Envelope:
        fast = decode_post_fast(body)
        if fast is not None:
            return Envelope(fast[0], [fast[1]])
        limits = self._gw.settings
        try:
            return decode_envelope(
                body,
                max_bytes=limits.sip.max_body_bytes,
                max_items=limits.limits.envelope_items,
            )
        except PchatError:
            raise
        except (ValueError, UnicodeError, RecursionError) as exc:
            # Whatever a decoder raises on hostile input is that input's fault: 400.
            raise BadRequest(f"not an XCCOS envelope ({type(exc).__name__})") from exc

    # -- responses from the client to our INFOs and BYEs ------------------------------------

    def _on_response(self, msg: SipMessage) -> None:
        if msg.status in (481, 487):  # XCCOS.md §1.3: the client has forgotten the dialog
            session = self.sessions.get(msg.call_id)
            if session is not None:
                self._end_session(session, False)

    # -- ending sessions ----------------------------------------------------------------------

    def _end_session(self, session: Session, send_bye: bool) -> None:
        if send_bye and not session.closed:
            self.send(session.dialog.request("BYE"))
        self.sessions.pop(session.dialog.call_id, None)
        if not self.sessions:
            self._watch_sessionless()
        rooms = session.close()
        if rooms:
            self._gw.leave_rooms(session.session_id, rooms)
