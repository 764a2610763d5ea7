"""The server's user agent for one connection: sign-in, provisioning, INVITE/UPDATE/BYE.

Sans-IO (HS-2): it takes parsed ``SipMessage``s and hands the bytes of its answers to
a ``send`` callable; the user directory and the sessions are the host's (``UaHost``).
The XCCOS INFO hot path is not here: the connection checks ``signed_in`` and
``from_is_user`` and goes straight to admission.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

import msgspec

from core.auth.throttle import Throttle
from core.errors import BadRequest, PchatError
from core.sip import digest, tokens
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

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, INFO, UPDATE, BYE, OPTIONS, SUBSCRIBE, REGISTER"
METHODS = frozenset(ALLOW.split(", "))  # the request metric's label values: a fixed set
PROVISIONING_EVENT = "vnd-microsoft-provisioning-v2"
PROVISIONING_TYPE = "application/vnd-microsoft-roaming-provisioning-v2+xml"
MAX_AUTH_FAILURES = 3  # wrong credentials this often on one connection: 403 and close
# A user record read this recently still answers policy questions: admin changes take up
# to the revision poll (1 s) anyway, and a sign-in asks three times in a few milliseconds.
RECORD_FRESH_S = 1.0
MIN_SESSION_EXPIRES_S = 90  # RFC 4028 §4
# A REGISTER binds nothing here (sign-in is per connection), so the granted lifetime only
# paces the client's re-REGISTER: SIPE re-registers 30 s before it, and 900 s is Lync's.
REGISTER_EXPIRES_S = 900
# SIPE sends a CRLF keep-alive this often when the REGISTER 200 names it (ms-keep-alive);
# well inside the 5-minute idle timeouts of NATs and of load balancers in front of us.
KEEP_ALIVE_S = 300
# SIPE's REGISTER credentials carry this digest-uri (its own bug): taken as the request URI.
SIPE_NULL_URI = "(null)"


class UaSettings(msgspec.Struct, frozen=True, kw_only=True):
    domain: str
    pool_uri: str  # the URI clients INVITE and our INFOs come From (Settings.pool_uri)
    auth_algorithms: list[str]
    trusted_hosts: list[str]  # peers whose P-Asserted-Identity is believed
    session_expires_s: int  # the longest session lifetime granted
    server: str = "pchat"  # the Server header of INVITE answers


class UaHost(Protocol):
    """What the user agent needs of the worker around it."""

    async def user_record(self, uri: str) -> UserRecord | None:
        """The user's record from the directory (the chat store)."""

    def open_session(self, dialog: Dialog, user: str, expires_s: int) -> None:
        """Raises QuotaExceeded when the user or the connection holds enough sessions."""

    def refresh_session(self, call_id: str, expires_s: int) -> bool:
        """False when no session has that Call-ID (the answer is then 481)."""

    def close_session(self, call_id: str) -> bool:
        """The client's BYE; False when no session has that Call-ID."""


class Endpoint(msgspec.Struct, frozen=True, kw_only=True):
    """Where the connection is: the peer's address and our own host:port."""

    peer: str
    local: str
    tls: bool = False


class UserAgent:
    """One connection's signalling state: who signed in, the digest nonce, failures."""

    def __init__(
        self,
        settings: UaSettings,
        host: UaHost,
        endpoint: Endpoint,
        send: Callable[[bytes], None],
        *,
        throttle: Throttle,
        on_error: Callable[[int], None] = lambda status: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._s = settings
        self._host = host
        self.endpoint = endpoint  # set again when the transport is known
        self._send = send
        self._on_error = on_error  # each error status sent (the metrics)
        self._clock = clock
        self._throttle = throttle  # the worker's, shared with the HTTP sign-in
        self._sleep = sleep  # a throttled attempt waits its turn
        self.user: str | None = None
        self.wants_close = False  # the connection closes after sending what is queued
        self._record: UserRecord | None = None
        self._record_read = 0.0
        self._nonce = ""
        self._failures = 0
        # The stored HA1s when the user signed in: a password change (other HA1s) or a
        # deletion ends the sign-in on every worker (the worker compares on each change).
        self.signed_in_ha1: dict[str, str] = {}

    # -- answers ------------------------------------------------------------------------

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
            self._on_error(status)
            if to_tag is None:
                to_tag = tokens.token_hex(6)  # RFC 3261 §8.2.6.2; kept if To has a tag
        try:
            self._send(response_to(request, status, to_tag=to_tag, extra=headers, body=body))
        except PchatError:  # not even the headers to answer with
            self.wants_close = True

    def from_is_user(self, msg: SipMessage) -> bool:
        try:
            from_uri = parse_name_addr(msg.get("From") or "")[1]
        except PchatError:
            return False
        return same_address(from_uri, self.user or "")

    # -- control requests ---------------------------------------------------------------

    async def handle(self, msg: SipMessage) -> bool:
        """Answers one request; errors become their status. True for an INFO of the
        signed-in user, which is the connection's to run (it was queued behind a sign-in)."""
        try:
            return await self._handle(msg)
        except PchatError as exc:
            self.reply(msg, exc.sip_status, warning=str(exc) or exc.reason)
            return False

    async def _handle(self, msg: SipMessage) -> bool:
        if self.user is None and not await self._sign_in(msg):
            return False
        if not self.from_is_user(msg):
            self.reply(msg, 403, warning="From is not the signed-in user")
            return False
        method = msg.method
        if method == "INFO":
            return True
        if method == "REGISTER":
            self._on_register(msg)
            return False
        if method == "OPTIONS":
            extra = [("Allow", ALLOW), ("Accept", "text/plain"), ("Supported", "timer")]
            self.reply(msg, 200, extra=extra)
        elif method == "SUBSCRIBE":
            await self._on_subscribe(msg)
        elif method == "INVITE":
            await self._on_invite(msg)
        elif method == "UPDATE":
            self._on_update(msg)
        elif method == "BYE":
            ok = self._host.close_session(msg.call_id)
            self.reply(msg, 200 if ok else 481)
        else:
            self.reply(msg, 405, extra=[("Allow", ALLOW)])
        return False

    # -- sign-in (XCCOS.md §1.1) --------------------------------------------------------

    async def _sign_in(self, msg: SipMessage) -> bool:
        s = self._s
        asserted = msg.get("P-Asserted-Identity")
        if asserted and self.endpoint.peer in s.trusted_hosts:
            return await self._bind(msg, f"sip:{address_of(parse_name_addr(asserted)[1])}")
        # SIPE answers only a 407 (RFC 3261 §22.3) and sends Proxy-Authorization back.
        proxy = msg.method == "REGISTER"
        credentials = msg.get("Proxy-Authorization" if proxy else "Authorization")
        if credentials and self._nonce:
            if await self._check_digest(msg, credentials):
                return True
            if self.wants_close:
                return False
        self._nonce = digest.make_nonce()
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        challenges = [(name, digest.challenge(s.domain, self._nonce, a)) for a in s.auth_algorithms]
        self.reply(msg, 407 if proxy else 401, extra=challenges)
        return False

    async def _check_digest(self, msg: SipMessage, credentials: str) -> bool:
        s = self._s
        params = digest.parse_digest(credentials)
        username = params.get("username", "")
        uri = f"sip:{username}" if "@" in username else f"sip:{username}@{s.domain}"
        if not await self._wait_turn(msg, uri):
            return False
        record = await self._host.user_record(uri.lower())
        algorithm = params.get("algorithm", "MD5").upper()
        ha1 = record.ha1.get(f"{algorithm}:{username}") if record else None
        # RFC 7616 §3.4.6: the digest-uri must name the request's target; compared as
        # addresses so that a proxy's rewrite of parameters does not matter.
        digest_uri = params.get("uri", "")
        same_target = address_of(digest_uri) == address_of(msg.uri) or (
            msg.method == "REGISTER" and digest_uri == SIPE_NULL_URI
        )
        realm_ok = params.get("realm") == s.domain
        if ha1 and algorithm in s.auth_algorithms and realm_ok and same_target:
            if digest.verify(params, msg.method, ha1, nonce=self._nonce):
                self._throttle.succeeded(uri, self.endpoint.peer)
                return await self._bind(msg, uri.lower(), record)
        self._failures += 1
        self._throttle.failed(uri, self.endpoint.peer)
        log.info("failed sign-in for %r from %s", username[:80], self.endpoint.peer)
        if self._failures >= MAX_AUTH_FAILURES:
            self.reply(msg, 403, warning="too many failed sign-ins")
            self.wants_close = True
        return False

    async def _wait_turn(self, msg: SipMessage, uri: str) -> bool:
        """Waits out the throttle (core/auth/throttle.py); False when the attempt was
        refused unchecked with 503 and the connection is to close."""
        wait = self._throttle.admit(uri, self.endpoint.peer)
        if wait is None:
            log.info("sign-in for %s from %s refused: throttled", uri[:80], self.endpoint.peer)
            retry = [("Retry-After", str(self._throttle.retry_after_s()))]
            self.reply(msg, 503, warning="too many sign-in attempts; try later", extra=retry)
            self.wants_close = True
            return False
        if wait > 0:
            await self._sleep(wait)
        return True

    async def _bind(self, msg: SipMessage, uri: str, record: UserRecord | None = None) -> bool:
        if record is None:
            record = await self._host.user_record(uri)
        if record is None:
            self.reply(msg, 403, warning="unknown user")
            return False
        self.user = uri
        self.signed_in_ha1 = dict(record.ha1)
        self._record = record
        self._record_read = self._clock()
        return True

    # -- provisioning and the session (XCCOS.md §1.2-§1.3) --------------------------------

    async def _policy_enabled(self) -> bool:
        """The user's policy, read again unless it was read within the revision poll
        interval (a sign-in asks at SUBSCRIBE and INVITE, right after the credentials)."""
        now = self._clock()
        if self._record is None or now - self._record_read > RECORD_FRESH_S:
            self._record = await self._host.user_record(self.user or "")
            self._record_read = now
        return self._record is not None and self._record.enabled

    def _on_register(self, msg: SipMessage) -> None:
        """The 200 SIPE needs to take us for Lync (each header whole: it compares values
        without splitting lists, and splits Allow-Events on commas without trimming)."""
        asked = (msg.get("Expires") or "").strip()
        expires = 0 if asked == "0" else REGISTER_EXPIRES_S  # 0: the client signs off
        extra = [
            ("Contact", msg.get("Contact") or f"<{self.user}>"),
            ("Expires", str(expires)),
            ("Supported", "msrtc-event-categories"),
            ("Allow-Events", PROVISIONING_EVENT),
            ("ms-keep-alive", f"UAS; tcp=yes; hop-hop=yes; end-end=no; timeout={KEEP_ALIVE_S}"),
        ]
        self.reply(msg, 200, to_tag=tokens.token_hex(6), extra=extra)

    async def _on_subscribe(self, msg: SipMessage) -> None:
        event = (msg.get("Event") or "").split(";")[0].strip().lower()
        if event != PROVISIONING_EVENT:
            extra = [("Allow-Events", PROVISIONING_EVENT)]
            self.reply(msg, 489, warning=f"unsupported event {event[:40]}", extra=extra)
            return
        enabled = await self._policy_enabled()
        pool = self._s.pool_uri
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
        # SIPE reads the document from the 200 only with Event and ms-piggyback-cseq.
        extra = [
            ("Expires", "0"),
            ("Event", PROVISIONING_EVENT),
            ("ms-piggyback-cseq", str(msg.cseq[0])),
            ("subscription-state", "terminated;expires=0"),
            ("Content-Type", PROVISIONING_TYPE),
        ]
        self.reply(msg, 200, to_tag=tokens.token_hex(6), extra=extra, body=body)

    def session_expires(self, msg: SipMessage) -> int:
        """The lifetime granted: asked for (RFC 4028: at least 90 s), never longer than
        configured; a value that is not a plain number is a 400."""
        default = self._s.session_expires_s
        asked = (msg.get("Session-Expires") or "").split(";")[0].strip()
        if not asked:
            return default
        if not (asked.isascii() and asked.isdigit()) or len(asked) > 10:  # "²".isdigit()
            raise BadRequest("Session-Expires must be a number of seconds")
        return min(max(int(asked), MIN_SESSION_EXPIRES_S), default)

    async def _on_invite(self, msg: SipMessage) -> None:
        expires = self.session_expires(msg)  # a bad value is refused before anything is made
        if self._host.refresh_session(msg.call_id, expires):  # a re-INVITE
            self._refreshed(msg, expires)
            return
        domain = self._s.domain.lower()
        if address_of(msg.uri).lower() not in (f"pchat@{domain}", f"ocschat@{domain}"):
            self.reply(msg, 404, warning="not a persistent chat pool URI")
            return
        if not await self._policy_enabled():
            self.reply(msg, 403, warning="persistent chat is not enabled for this user")
            return
        dialog = self._dialog(msg)
        self._host.open_session(dialog, self.user or "", expires)
        self.reply(
            msg,
            200,
            to_tag=dialog.local_tag,
            extra=[
                ("Contact", self._contact()),
                ("Session-Expires", f"{expires};refresher=uac"),
                ("Supported", "timer"),
                ("Allow", ALLOW),
                ("Server", self._s.server),
            ],
        )

    def _contact(self) -> str:
        return (
            f"<sip:pchat@{self.endpoint.local};transport={'tls' if self.endpoint.tls else 'tcp'}>"
        )

    def _dialog(self, msg: SipMessage) -> Dialog:
        from_value = msg.get("From") or ""
        contact = msg.get("Contact")
        remote_target = parse_name_addr(contact)[1] if contact else parse_name_addr(from_value)[1]
        return Dialog(
            call_id=msg.call_id,
            local_uri=f"sip:{address_of(msg.uri)}",  # our INFOs come From what was INVITEd
            local_tag=tokens.token_hex(8),
            remote_from=from_value,
            remote_uri=parse_name_addr(from_value)[1],
            remote_tag=tag_of(from_value),
            remote_target=remote_target,
            contact=self._contact(),
            via_host=self.endpoint.local,
            transport="TLS" if self.endpoint.tls else "TCP",
        )

    def _on_update(self, msg: SipMessage) -> None:
        expires = self.session_expires(msg)
        if not self._host.refresh_session(msg.call_id, expires):
            self.reply(msg, 481)
            return
        self._refreshed(msg, expires)

    def _refreshed(self, msg: SipMessage, expires: int) -> None:
        extra = [("Session-Expires", f"{expires};refresher=uac"), ("Supported", "timer")]
        self.reply(msg, 200, extra=extra)
