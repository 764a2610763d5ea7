"""The sans-IO user agent, driven with bytes alone: requests in, answers out."""

from __future__ import annotations

import pytest

from core.auth.throttle import Throttle
from core.config import AuthSettings
from core.sip import digest
from core.sip.codec import SipCodec
from core.sip.dialog import Dialog
from core.sip.message import SipMessage, encode_request
from core.sip.useragent import Endpoint, UaSettings, UserAgent
from core.store.base import UserRecord

DOMAIN = "example.com"
ALICE = f"sip:alice@{DOMAIN}"
PASSWORD = "pw"


class Host:
    """The worker side: a directory of users and the sessions opened."""

    def __init__(self) -> None:
        self.users = {
            ALICE: UserRecord(
                uri=ALICE, ha1=digest.user_ha1s(ALICE, DOMAIN, PASSWORD), enabled=True
            ),
            f"sip:off@{DOMAIN}": UserRecord(
                uri=f"sip:off@{DOMAIN}",
                ha1=digest.user_ha1s(f"sip:off@{DOMAIN}", DOMAIN, PASSWORD),
                enabled=False,
            ),
        }
        self.sessions: dict[str, int] = {}
        self.dialogs: dict[str, Dialog] = {}
        self.lookups = 0

    async def user_record(self, uri: str) -> UserRecord | None:
        self.lookups += 1
        return self.users.get(uri)

    def open_session(self, dialog: Dialog, user: str, expires_s: int) -> None:
        self.sessions[dialog.call_id] = expires_s
        self.dialogs[dialog.call_id] = dialog

    def refresh_session(self, call_id: str, expires_s: int) -> bool:
        if call_id not in self.sessions:
            return False
        self.sessions[call_id] = expires_s
        return True

    def close_session(self, call_id: str) -> bool:
        return self.sessions.pop(call_id, None) is not None


class Wire:
    def __init__(self, trusted: list[str] | None = None, throttle: Throttle | None = None) -> None:
        self.host = Host()
        self.out: list[bytes] = []
        settings = UaSettings(
            domain=DOMAIN,
            pool_uri=f"sip:pchat@{DOMAIN}",
            auth_algorithms=["MD5", "SHA-256"],
            trusted_hosts=trusted or [],
            session_expires_s=1800,
        )
        self.ua = UserAgent(
            settings,
            self.host,
            Endpoint(peer="10.0.0.9", local="127.0.0.1:5041"),
            self.out.append,
            throttle=throttle or Throttle(AuthSettings()),
            sleep=self._sleep,
        )
        self.slept: list[float] = []
        self._cseq = 0

    async def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)  # the throttle's wait, without waiting

    async def send(
        self,
        method: str,
        *,
        user: str = ALICE,
        call_id: str = "c1",
        extra: list[tuple[str, str]] | None = None,
        uri: str = f"sip:pchat@{DOMAIN}",
    ) -> SipMessage:
        self._cseq += 1
        headers = [
            ("Via", "SIP/2.0/TCP 10.0.0.9:5000;branch=z9hG4bKx"),
            ("From", f"<{user}>;tag=ft"),
            ("To", f"<sip:pchat@{DOMAIN}>"),
            ("Call-ID", call_id),
            ("CSeq", f"{self._cseq} {method}"),
            ("Contact", "<sip:alice@10.0.0.9:5000;transport=tcp>"),
            *(extra or []),
        ]
        [msg] = SipCodec(max_header_bytes=16384, max_body_bytes=65536).feed(
            encode_request(method, uri, headers)
        )
        assert isinstance(msg, SipMessage)
        self.out.clear()
        await self.ua.handle(msg)
        [answer] = SipCodec(max_header_bytes=16384, max_body_bytes=65536).feed(b"".join(self.out))
        assert isinstance(answer, SipMessage)
        return answer

    async def sign_in(self, password: str = PASSWORD, user: str = ALICE) -> SipMessage:
        challenge = await self.send(
            "SUBSCRIBE", user=user, extra=[("Event", "vnd-microsoft-provisioning-v2")]
        )
        assert challenge.status == 401
        chosen = challenge.get_all("WWW-Authenticate")[0]
        auth = digest.authorization(chosen, "SUBSCRIBE", user, user.removeprefix("sip:"), password)
        return await self.send(
            "SUBSCRIBE",
            user=user,
            uri=user,
            extra=[("Event", "vnd-microsoft-provisioning-v2"), ("Authorization", auth)],
        )


async def test_digest_sign_in_then_provisioning() -> None:
    wire = Wire()
    ok = await wire.sign_in()
    assert ok.status == 200 and wire.ua.user == ALICE
    assert ok.get("Content-Type") == "application/vnd-microsoft-roaming-provisioning-v2+xml"
    assert b'EnablePersistentChat">true' in ok.body
    assert b"DefaultPersistentChatPoolUri" in ok.body


async def test_three_wrong_passwords_get_403_and_close() -> None:
    wire = Wire()
    assert (await wire.sign_in("wrong")).status == 401
    assert (await wire.sign_in("wrong")).status == 401
    refused = await wire.sign_in("wrong")
    assert refused.status == 403 and "too many" in (refused.get("Warning") or "")
    assert wire.ua.wants_close and wire.ua.user is None


async def test_a_throttled_attempt_waits_then_is_refused_unchecked() -> None:
    now = [100.0]
    throttle = Throttle(
        AuthSettings(free_attempts=1, base_delay_s=1.0, max_delay_s=1.5), lambda: now[0]
    )
    first = Wire(throttle=throttle)
    assert (await first.sign_in("wrong")).status == 401
    assert (await first.sign_in("wrong")).status == 401
    assert first.slept == []  # the delay is for the attempt after the free one
    second = Wire(throttle=throttle)  # another connection: the same user's turns
    assert (await second.sign_in(PASSWORD)).status == 200
    assert second.slept == [1.0]  # delayed, then checked: the honest user gets in
    third = Wire(throttle=throttle)
    lookups = third.host.lookups
    refused = await third.sign_in(PASSWORD)  # its turn is 2.5 s away: over the 1.5 s cap
    assert refused.status == 503 and refused.get("Retry-After") == "1"
    assert third.host.lookups == lookups  # refused without checking the password
    assert third.ua.wants_close and third.ua.user is None


async def test_invite_opens_a_session_and_update_refreshes_it() -> None:
    wire = Wire()
    await wire.sign_in()
    ok = await wire.send("INVITE", call_id="d1", extra=[("Session-Expires", "120")])
    assert ok.status == 200 and ok.get("Session-Expires") == "120;refresher=uac"
    assert wire.host.sessions == {"d1": 120}
    assert (
        await wire.send("UPDATE", call_id="d1", extra=[("Session-Expires", "30")])
    ).status == 200
    assert wire.host.sessions == {"d1": 90}  # RFC 4028's minimum
    assert (await wire.send("UPDATE", call_id="nope")).status == 481
    assert (await wire.send("BYE", call_id="d1")).status == 200
    assert wire.host.sessions == {}
    assert (await wire.send("BYE", call_id="d1")).status == 481


@pytest.mark.parametrize("value", ["²", "12x", "99999999999"])
async def test_bad_session_expires_is_400_and_opens_nothing(value: str) -> None:
    wire = Wire()
    await wire.sign_in()
    bad = await wire.send("INVITE", call_id="d2", extra=[("Session-Expires", value)])
    assert bad.status == 400 and "Session-Expires" in (bad.get("Warning") or "")
    assert wire.host.sessions == {}


async def test_invite_to_another_uri_is_404_and_a_disabled_user_403() -> None:
    wire = Wire()
    await wire.sign_in()
    assert (await wire.send("INVITE", uri=f"sip:bob@{DOMAIN}")).status == 404
    off = Wire()
    await off.sign_in(user=f"sip:off@{DOMAIN}")
    assert (await off.send("INVITE", user=f"sip:off@{DOMAIN}")).status == 403
    assert off.host.sessions == {}


async def test_forged_from_is_403_and_methods_are_answered() -> None:
    wire = Wire()
    await wire.sign_in()
    assert (await wire.send("OPTIONS", user=f"sip:bob@{DOMAIN}")).status == 403
    assert (await wire.send("OPTIONS", user=f"sip:ALICE@{DOMAIN.upper()}")).status == 200
    refused = await wire.send("MESSAGE")
    assert refused.status == 405 and "INVITE" in (refused.get("Allow") or "")


async def test_asserted_identity_only_from_a_trusted_host() -> None:
    pai = [("P-Asserted-Identity", f"<{ALICE}>")]
    assert (await Wire().send("OPTIONS", extra=pai)).status == 401
    trusted = Wire(trusted=["10.0.0.9"])
    assert (await trusted.send("OPTIONS", extra=pai)).status == 200
    assert trusted.ua.user == ALICE


async def test_an_info_after_sign_in_is_handed_back_to_the_connection() -> None:
    wire = Wire()
    await wire.sign_in()
    [msg] = SipCodec(max_header_bytes=16384, max_body_bytes=65536).feed(
        encode_request(
            "INFO",
            f"sip:pchat@{DOMAIN}",
            [
                ("From", f"<{ALICE}>;tag=ft"),
                ("To", "<sip:pchat@example.com>"),
                ("Call-ID", "c1"),
                ("CSeq", "9 INFO"),
                ("Via", "SIP/2.0/TCP h;branch=z9hG4bKy"),
            ],
        )
    )
    assert isinstance(msg, SipMessage)
    wire.out.clear()
    assert await wire.ua.handle(msg) is True
    assert wire.out == []  # nothing answered: the connection runs it


async def sipe_register(wire: Wire, password: str = PASSWORD) -> SipMessage:
    """SIPE's sign-in: REGISTER, the 407, the same REGISTER with digest-uri "(null)"."""
    challenge = await wire.send("REGISTER", uri=f"sip:{DOMAIN}", extra=[("Expires", "900")])
    assert challenge.status == 407 and challenge.get("WWW-Authenticate") is None
    offered = challenge.get_all("Proxy-Authenticate")
    [md5] = [c for c in offered if "MD5" in c]
    auth = digest.authorization(md5, "REGISTER", "(null)", "alice@example.com", password)
    return await wire.send(
        "REGISTER",
        uri=f"sip:{DOMAIN}",
        extra=[("Expires", "900"), ("Proxy-Authorization", auth)],
    )


async def test_register_signs_in_through_407_with_sipes_null_digest_uri() -> None:
    wire = Wire()
    ok = await sipe_register(wire)
    assert ok.status == 200 and wire.ua.user == ALICE
    # each a whole header of its own: SIPE compares values without splitting lists
    assert int(ok.get("Expires") or "0") > 0
    assert "msrtc-event-categories" in ok.get_all("Supported")
    assert ok.get("Allow-Events") == "vnd-microsoft-provisioning-v2"
    assert "timeout=" in (ok.get("ms-keep-alive") or "")
    signed_off = await wire.send("REGISTER", uri=f"sip:{DOMAIN}", extra=[("Expires", "0")])
    assert signed_off.status == 200 and signed_off.get("Expires") == "0"


async def test_register_with_a_wrong_password_is_407_again_then_403() -> None:
    wire = Wire()
    assert (await sipe_register(wire, "wrong")).status == 407
    assert (await sipe_register(wire, "wrong")).status == 407
    refused = await sipe_register(wire, "wrong")
    assert refused.status == 403 and "too many" in (refused.get("Warning") or "")
    assert wire.ua.user is None and wire.ua.wants_close


async def test_null_digest_uri_is_refused_outside_register() -> None:
    wire = Wire()
    event = [("Event", "vnd-microsoft-provisioning-v2")]
    challenge = await wire.send("SUBSCRIBE", extra=event)
    chosen = challenge.get_all("WWW-Authenticate")[0]
    auth = digest.authorization(chosen, "SUBSCRIBE", "(null)", "alice@example.com", PASSWORD)
    again = await wire.send("SUBSCRIBE", uri=ALICE, extra=[*event, ("Authorization", auth)])
    assert again.status == 401 and wire.ua.user is None


async def test_provisioning_200_carries_what_sipe_reads_it_by() -> None:
    wire = Wire()
    await sipe_register(wire)
    ok = await wire.send(
        "SUBSCRIBE",
        extra=[("Event", "vnd-microsoft-provisioning-v2"), ("Proxy-Require", "ms-benotify")],
    )
    assert ok.status == 200  # Proxy-Require ignored, never a 420
    assert ok.get("Event") == "vnd-microsoft-provisioning-v2"
    assert ok.get("ms-piggyback-cseq") == str(ok.cseq[0])
    assert ok.get("subscription-state") == "terminated;expires=0"
    assert b"DefaultPersistentChatPoolUri" in ok.body


@pytest.mark.parametrize("pool", ["pchat", "ocschat", "OCSChat"])
async def test_the_dialog_sends_from_the_invited_uri(pool: str) -> None:
    wire = Wire()
    await sipe_register(wire)
    ok = await wire.send("INVITE", call_id="d9", uri=f"sip:{pool}@{DOMAIN}")
    assert ok.status == 200
    [info] = SipCodec(max_header_bytes=16384, max_body_bytes=65536).feed(
        wire.host.dialogs["d9"].info(b"<x/>")
    )
    assert isinstance(info, SipMessage) and info.call_id == "d9"
    assert (info.get("From") or "").startswith(f"<sip:{pool}@{DOMAIN}>;tag=")
