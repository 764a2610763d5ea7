"""SIP over one TCP connection: framing, digest sign-in, dialogs, bounded output (HS-2)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections import deque
from collections.abc import Iterable
from typing import cast

from core.errors import BadRequest, FramingLost, PchatError
from core.sip import digest
from core.sip.codec import PING, BadMessage, SipCodec
from core.sip.dialog import Dialog
from core.sip.message import (
    SipMessage,
    address_of,
    parse_name_addr,
    response_to,
    same_address,
    tag_of,
)
from core.store.base import UserRecord
from core.xccos.envelope import Envelope, decode_envelope, decode_post_fast
from shards.worker.gateway import Gateway
from shards.worker.session import Session

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, INFO, UPDATE, BYE, OPTIONS, SUBSCRIBE"
METHODS = frozenset(ALLOW.split(", "))  # the metric's label values: a fixed set
PROVISIONING_EVENT = "vnd-microsoft-provisioning-v2"
PROVISIONING_TYPE = "application/vnd-microsoft-roaming-provisioning-v2+xml"
XCCOS_TYPES = ("text/plain", "application/xml", "text/xml")
# A user record read this recently still answers policy questions: admin changes take up
# to the revision poll (1 s) anyway, and a sign-in asks three times in a few milliseconds.
RECORD_FRESH_S = 1.0
MAX_AUTH_FAILURES = 3  # wrong credentials this often on one connection: 403 and close
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
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flush_scheduled = False
        self._closed = False
        self.user: str | None = None
        self._record: UserRecord | None = None
        self._record_read = 0.0
        self._nonce = ""
        self._failures = 0
        self._peer = ""
        self._local = ""
        self._tls = False
        self.sessions: dict[str, Session] = {}
        self._control: deque[SipMessage] = deque()
        self._control_task: asyncio.Task[None] | None = None
        self._signin_timer: asyncio.TimerHandle | None = None

    # -- transport events -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._gw.connections.add(self)
        self._tls = transport.get_extra_info("ssl_object") is not None
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
        self._local = f"{local[0]}:{local[1]}" if isinstance(local, tuple) else "127.0.0.1:5041"
        loop = asyncio.get_running_loop()
        self._signin_timer = loop.call_later(
            self._gw.settings.sip.unauth_timeout_s, self._signin_timeout
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._gw.connections.discard(self)
        if self._signin_timer is not None:
            self._signin_timer.cancel()
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
                    self.reply(item.message, item.status, warning=item.reason)
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

    def reply(
        self,
        request: SipMessage,
        status: int,
        *,
        warning: str = "",
        to_tag: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        headers = list(extra)
        if warning:
            headers.append(("Warning", f'399 pchat "{warning.replace(chr(34), chr(39))}"'))
        if status >= 400:
            self._gw.metrics.error(status)
            if to_tag is None:
                to_tag = secrets.token_hex(6)  # RFC 3261 §8.2.6.2; kept if To has a tag
        try:
            self.send(response_to(request, status, to_tag=to_tag, extra=headers, body=body))
        except PchatError:  # not even the headers to answer with
            self.abort()

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
            self.reply(msg, 503, warning="too many requests in flight", extra=self._retry_after())
            return
        self._control.append(msg)
        if self._control_task is None:
            self._control_task = asyncio.get_running_loop().create_task(self._run_control())

    async def _run_control(self) -> None:
        try:
            while self._control and not self._closed:
                msg = self._control.popleft()
                try:
                    await self._on_control(msg)
                except PchatError as exc:
                    self.reply(msg, exc.sip_status, warning=str(exc) or exc.reason)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception(
                        "bug handling %s from %s; closing the connection", msg.method, self._peer
                    )
                    self.abort()
        finally:
            self._control_task = None

    async def _on_control(self, msg: SipMessage) -> None:
        if self.user is None and not await self._sign_in(msg):
            return
        if not self._from_is_user(msg):
            self.reply(msg, 403, warning="From is not the signed-in user")
            return
        method = msg.method
        if method == "OPTIONS":
            self.reply(
                msg, 200, extra=[("Allow", ALLOW), ("Accept", "text/plain"), ("Supported", "timer")]
            )
        elif method == "SUBSCRIBE":
            await self._on_subscribe(msg)
        elif method == "INVITE":
            await self._on_invite(msg)
        elif method == "INFO":
            self._on_info(msg)
        elif method == "UPDATE":
            self._on_update(msg)
        elif method == "BYE":
            session = self.sessions.get(msg.call_id)
            if session is None:
                self.reply(msg, 481)
                return
            self.reply(msg, 200)
            self._end_session(session, False)
        else:
            self.reply(msg, 405, extra=[("Allow", ALLOW)])

    def _from_is_user(self, msg: SipMessage) -> bool:
        try:
            from_uri = parse_name_addr(msg.get("From") or "")[1]
        except PchatError:
            return False
        return same_address(from_uri, self.user or "")

    # -- sign-in (XCCOS.md §1.1) ----------------------------------------------------------

    async def _sign_in(self, msg: SipMessage) -> bool:
        s = self._gw.settings
        asserted = msg.get("P-Asserted-Identity")
        if asserted and self._peer in s.sip.trusted_hosts:
            return await self._bind(msg, f"sip:{address_of(parse_name_addr(asserted)[1])}")
        credentials = msg.get("Authorization")
        if credentials and self._nonce:
            params = digest.parse_digest(credentials)
            username = params.get("username", "")
            uri = f"sip:{username}" if "@" in username else f"sip:{username}@{s.domain}"
            record = await self._gw.store.get_user(uri.lower())
            algorithm = params.get("algorithm", "MD5").upper()
            ha1 = record.ha1.get(f"{algorithm}:{username}") if record else None
            # RFC 7616 §3.4.6: the digest-uri must name the request's target; compared as
            # addresses so that a proxy's rewrite of parameters does not matter.
            same_target = address_of(params.get("uri", "")) == address_of(msg.uri)
            realm_ok = params.get("realm") == s.domain
            if ha1 and algorithm in s.sip.auth_algorithms and realm_ok and same_target:
                if digest.verify(params, msg.method, ha1, nonce=self._nonce):
                    return await self._bind(msg, uri.lower(), record)
            self._failures += 1
            log.info("failed sign-in for %s from %s", username, self._peer)
            if self._failures >= MAX_AUTH_FAILURES:
                self.reply(msg, 403, warning="too many failed sign-ins")
                self.close()
                return False
        self._nonce = digest.make_nonce()
        challenges = [
            ("WWW-Authenticate", digest.challenge(s.domain, self._nonce, a))
            for a in s.sip.auth_algorithms
        ]
        self.reply(msg, 401, extra=challenges)
        return False

    async def _bind(self, msg: SipMessage, uri: str, record: UserRecord | None = None) -> bool:
        if record is None:
            record = await self._gw.store.get_user(uri)
        if record is None:
            self.reply(msg, 403, warning="unknown user")
            return False
        self.user = uri
        self._record = record
        self._record_read = asyncio.get_running_loop().time()
        if self._signin_timer is not None:
            self._signin_timer.cancel()
        return True

    def _signin_timeout(self) -> None:
        if self.user is None:
            log.info("closing %s: no sign-in within the time limit", self._peer)
            self.abort()

    # -- provisioning and the session (XCCOS.md §1.2-§1.3) -----------------------------------

    async def _policy_enabled(self) -> bool:
        """The user's policy, read again unless it was read within the revision poll
        interval (a sign-in asks at SUBSCRIBE and INVITE, right after the credentials)."""
        now = asyncio.get_running_loop().time()
        if self._record is None or now - self._record_read > RECORD_FRESH_S:
            self._record = await self._gw.store.get_user(self.user or "")
            self._record_read = now
        return self._record is not None and self._record.enabled

    async def _on_subscribe(self, msg: SipMessage) -> None:
        event = (msg.get("Event") or "").split(";")[0].strip().lower()
        if event != PROVISIONING_EVENT:
            self.reply(
                msg,
                489,
                warning=f"unsupported event {event}",
                extra=[("Allow-Events", PROVISIONING_EVENT)],
            )
            return
        enabled = await self._policy_enabled()
        pool = self._gw.settings.pool_uri
        pool_prop = (
            f'<property name="DefaultPersistentChatPoolUri">{pool}</property>' if enabled else ""
        )
        body = (
            '<provisionGroupList xmlns="http://schemas.microsoft.com/2006/09/sip/'
            'provisiongrouplist-notification"><provisionGroup name="persistentChatConfiguration">'
            '<propertyEntryList><property name="EnablePersistentChat">'
            f"{'true' if enabled else 'false'}</property>{pool_prop}"
            "</propertyEntryList></provisionGroup></provisionGroupList>"
        ).encode()
        self.reply(
            msg,
            200,
            to_tag=secrets.token_hex(6),
            extra=[("Expires", "0"), ("Content-Type", PROVISIONING_TYPE)],
            body=body,
        )

    def _session_expires(self, msg: SipMessage) -> int:
        default = self._gw.settings.sip.session_expires_s
        asked = (msg.get("Session-Expires") or "").split(";")[0].strip()
        if not asked:
            return default
        if not (asked.isascii() and asked.isdigit()) or len(asked) > 10:  # "²".isdigit()
            raise BadRequest("Session-Expires must be a number of seconds")
        # RFC 4028: 90 s minimum; never longer than the configured lifetime.
        return min(max(int(asked), 90), default)

    async def _on_invite(self, msg: SipMessage) -> None:
        existing = self.sessions.get(msg.call_id)
        if existing is not None:  # a re-INVITE refreshes the session
            self._on_update(msg)
            return
        expires = self._session_expires(msg)  # a bad value is refused before anything is made
        domain = self._gw.settings.domain.lower()
        target = address_of(msg.uri).lower()
        if target not in (f"pchat@{domain}", f"ocschat@{domain}"):
            self.reply(msg, 404, warning="not a persistent chat pool URI")
            return
        if not await self._policy_enabled():
            self.reply(msg, 403, warning="persistent chat is not enabled for this user")
            return
        from_value = msg.get("From") or ""
        contact = msg.get("Contact")
        remote_target = parse_name_addr(contact)[1] if contact else parse_name_addr(from_value)[1]
        local_tag = secrets.token_hex(8)
        our_contact = f"<sip:pchat@{self._local};transport={'tls' if self._tls else 'tcp'}>"
        dialog = Dialog(
            call_id=msg.call_id,
            local_uri=self._gw.settings.pool_uri,
            local_tag=local_tag,
            remote_from=from_value,
            remote_uri=parse_name_addr(from_value)[1],
            remote_tag=tag_of(from_value),
            remote_target=remote_target,
            contact=our_contact,
            via_host=self._local,
            transport="TLS" if self._tls else "TCP",
        )
        session = Session(
            host=self._gw,
            dialog=dialog,
            user=self.user or "",
            session_id=self._gw.new_session_id(),
            gateway=self._gw.worker_id,
            send=self.send,
            end=self._end_session,
        )
        self.sessions[msg.call_id] = session
        self._gw.add_session(session)
        self._gw.load_follows(session)
        session.refresh(expires)
        self.reply(
            msg,
            200,
            to_tag=local_tag,
            extra=[
                ("Contact", our_contact),
                ("Session-Expires", f"{expires};refresher=uac"),
                ("Supported", "timer"),
                ("Allow", ALLOW),
                ("Server", f"pchat (worker {self._gw.worker_id})"),
            ],
        )

    def _on_update(self, msg: SipMessage) -> None:
        session = self.sessions.get(msg.call_id)
        if session is None:
            self.reply(msg, 481)
            return
        expires = self._session_expires(msg)
        session.refresh(expires)
        self.reply(
            msg,
            200,
            extra=[("Session-Expires", f"{expires};refresher=uac"), ("Supported", "timer")],
        )

    def _retry_after(self) -> list[tuple[str, str]]:
        return [("Retry-After", str(self._gw.settings.limits.retry_after_s))]

    def _on_info(self, msg: SipMessage) -> None:
        """The hot path: admission, decode, 200 at once, the reply later (XCCOS.md §1.3)."""
        session = self.sessions.get(msg.call_id)
        if session is None:
            self.reply(msg, 481)
            return
        if not self._from_is_user(msg):
            self.reply(msg, 403, warning="From is not the signed-in user")
            return
        ctype = (msg.get("Content-Type") or "text/plain").split(";")[0].strip().lower()
        if ctype not in XCCOS_TYPES:
            self.reply(msg, 415, extra=[("Accept", "text/plain")])
            return
        if not session.can_queue():
            self._gw.metrics.rejected("session")
            self.reply(msg, 503, warning="too many commands queued", extra=self._retry_after())
            return
        ticket = self._gw.admission.admit()
        if ticket is None:
            self.reply(msg, 503, warning="server busy", extra=self._retry_after())
            return
        with ticket:  # the place goes back at the end of this block unless submit holds it
            try:
                envelope = self._decode(msg.body)
            except PchatError as exc:
                self.reply(msg, exc.sip_status, warning=str(exc) or "not an XCCOS envelope")
                return
            if not envelope.items:
                self.reply(msg, 400, warning="empty XCCOS envelope")
                return
            self.reply(msg, 200)
            session.submit(envelope, ticket)

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
        rooms = session.close()
        if rooms:
            self._gw.leave_rooms(session.session_id, rooms)
