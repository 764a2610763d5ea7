"""A bounded, seeded fuzz run (issue 10): real SIP/XCCOS messages, mutated, against a worker.

Each case opens a connection (signed in with a session for the in-dialog templates),
sends one mutated message and a well-formed OPTIONS after it, and waits for an answer to
every request the server's own codec finds in those bytes, or for the connection to
close. ``PCHAT_FUZZ_SEED`` picks another seed and ``PCHAT_FUZZ_CASES`` another count; a
failure names the seed, the case and its bytes. Case n draws from its own generator, the
(n+1)th ``getrandbits(64)`` of ``Random(seed)``, so it replays alone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from client.client import PchatClient
from core.config import AuthSettings, Settings
from core.errors import FramingLost
from core.sip import digest
from core.sip.codec import BadMessage, SipCodec
from core.sip.message import SipMessage, encode_request
from core.xccos import build
from shards.worker.runner import RunningWorker, run_worker
from tests.conftest import DOMAIN, PASSWORD, add_room, add_user, make_settings, signed_in

SEED = int(os.environ.get("PCHAT_FUZZ_SEED", "20261203"))
# About 17 s on the shared 2-core test machine (three seeds measured: 16.4-17.0 s).
CASES = int(os.environ.get("PCHAT_FUZZ_CASES", "2500"))
ANSWER_TIMEOUT_S = 3.0  # far above a loopback answer; the sign-in timer is 30 s
USERS = ("alice", "bob", "carol")
EDGE_NUMBERS = ("²", "18446744073709551616", "-1", "0", "99999999999", "1e9", "0x10", "", "٣")
EDGE_TEXT = ("\x00", "\x1b[2J", "<", "&amp;", "&#0;", '"', "\r\n", "\u202e", "\udcff", "x" * 5000)


@pytest.fixture
async def fuzzed(
    tmp_path: Path, redis_url: str, loop_errors: list[dict[str, object]]
) -> AsyncIterator[RunningWorker]:
    # Wrong credentials are part of the corpus: the throttle would only slow the run down.
    settings: Settings = msgspec.structs.replace(
        make_settings(tmp_path, redis_url), auth=AuthSettings(max_keys=0)
    )
    async with run_worker(settings) as worker:
        for name in USERS:
            await add_user(worker.store, name)
        yield worker


class Template(msgspec.Struct):
    method: str
    uri: str
    headers: list[tuple[str, str]]
    body: bytes = b""


def _templates(client: PchatClient, room: str) -> list[Template]:
    """Requests a real client sends, in its dialog (XCCOS.md §1)."""

    def info(inner: str) -> Template:
        body = build.envelope(random.randrange(1, 1 << 31), inner)
        headers = client._headers("INFO", 1, True, [("Content-Type", "text/plain")])
        return Template("INFO", client._remote_target, headers, body)

    def control(method: str, extra: list[tuple[str, str]], in_dialog: bool = True) -> Template:
        return Template(method, client._remote_target, client._headers(method, 1, in_dialog, extra))

    chan = build.chanib(room)
    return [
        info(build.post(room, client.uri, "hello <b>world</b>")),
        info(build.cmd("cmd:join", 1, chan)),
        info(build.cmd("cmd:bjoin", 1, chan + chan)),
        info(build.cmd("cmd:bccontext", 1, build.chanib(room, inner='<last cnt="25"/>'))),
        info(build.cmd("cmd:setpref", 1, '<pref label="layout" seqid="0" content="d2lkZQ=="/>')),
        info(build.cmd("cmd:getpref", 1, '<pref label="layout" seqid="0"/>')),
        info(build.cmd("cmd:chansrch", 1, '<qib qtype="BYNAME" criteria="room"/>')),
        info(build.cmd("cmd:getserverinfo", 1, f'<sib domain="{DOMAIN}" infoType="123"/>')),
        info(build.cmd("cmd:part", 1, chan)),
        control("UPDATE", [("Session-Expires", "1800"), ("Supported", "timer")]),
        control("OPTIONS", []),
        control("BYE", []),
        control("SUBSCRIBE", [("Event", "vnd-microsoft-provisioning-v2"), ("Expires", "0")], False),
    ]


def _unsigned_templates(port: int) -> list[Template]:
    """Sign-in requests of a connection not yet signed in, with a digest answer."""
    uri = f"sip:alice@{DOMAIN}"
    challenge = digest.challenge(DOMAIN, "0" * 32, "MD5")
    auth = digest.authorization(challenge, "SUBSCRIBE", uri, f"alice@{DOMAIN}", PASSWORD)
    headers = [
        ("Via", f"SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bK{secrets.token_hex(4)}"),
        ("Max-Forwards", "70"),
        ("From", f"<{uri}>;tag=abc"),
        ("To", f"<{uri}>"),
        ("Call-ID", "fuzz-setup"),
        ("CSeq", "1 SUBSCRIBE"),
        ("Event", "vnd-microsoft-provisioning-v2"),
        ("Authorization", auth),
    ]
    invite = [(k, v.replace("SUBSCRIBE", "INVITE")) for k, v in headers if k != "Event"]
    return [
        Template("SUBSCRIBE", uri, headers),
        Template("INVITE", f"sip:pchat@{DOMAIN}", invite, b"m=message 5060 sip null\r\n"),
    ]


def _mutate_message(rng: random.Random, t: Template) -> bytes:
    """A structural change, re-encoded with a right Content-Length."""
    headers, body, method = list(t.headers), t.body, t.method
    choice = rng.randrange(6)
    if choice == 0 and headers:  # an edge number or edge text in a header value
        i = rng.randrange(len(headers))
        name, value = headers[i]
        pool = EDGE_NUMBERS if rng.random() < 0.5 else EDGE_TEXT
        headers[i] = (name, _splice_token(rng, value, rng.choice(pool)))
    elif choice == 1 and headers:  # a header duplicated, dropped or renamed
        i = rng.randrange(len(headers))
        action = rng.randrange(3)
        if action == 0:
            headers.insert(i, headers[i])
        elif action == 1:
            del headers[i]
        else:
            headers[i] = (headers[i][0].upper()[::-1], headers[i][1])
    elif choice == 2:
        method = rng.choice(["INFO", "INVITE", "FOO", "ACK", "BYE", "UPDATE", "REGISTER", "", "Ä"])
    elif choice == 3 and body:  # an XML value replaced
        body = _splice_token(rng, body.decode(), rng.choice(EDGE_NUMBERS + EDGE_TEXT)).encode(
            errors="surrogatepass"
        )
    elif choice == 4 and body:  # hostile XML: a DTD, deep nesting, a repeated part
        hostile = rng.choice(
            ['<!DOCTYPE x [<!ENTITY a "aaaa">]>', "<a>" * 300, "&a;", "<?pi x?>", "<![CDATA[x"]
        )
        cut = rng.randrange(len(body) + 1)
        body = body[:cut] + hostile.encode() + body[cut:]
    else:  # a body grown past the limits
        body = body * rng.choice([2, 50, 2000]) if body else b"x" * rng.choice([10, 70_000])
    try:
        return encode_request(method, t.uri, headers, body)
    except (ValueError, UnicodeError):
        return _mutate_bytes(rng, encode_request(t.method, t.uri, t.headers, t.body))


def _splice_token(rng: random.Random, text: str, new: str) -> str:
    """Replaces one run of digits (or, without digits, a random slice) with ``new``."""
    runs = [i for i, c in enumerate(text) if c.isdigit()]
    if runs:
        start = rng.choice(runs)
        end = start
        while end < len(text) and text[end].isdigit():
            end += 1
        return text[:start] + new + text[end:]
    cut = rng.randrange(len(text) + 1)
    return text[:cut] + new + text[cut + rng.randrange(4) :]


def _mutate_bytes(rng: random.Random, raw: bytes) -> bytes:
    """Byte-level damage: flips, cuts, insertions, a wrong Content-Length, truncation."""
    data = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(5)
        pos = rng.randrange(len(data) + 1)
        if choice == 0 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1:
            del data[pos : pos + rng.randint(1, 40)]
        elif choice == 2:
            data[pos:pos] = rng.choice([b"\r\n", b"\r\n\r\n", b"\x00", b":", b" ", b"\xff\xfe"])
        elif choice == 3:
            data = bytearray(raw.replace(b"Content-Length: ", b"Content-Length: 9", 1))
        else:
            data = data[:pos]
    return bytes(data)


def case_bytes(rng: random.Random, templates: list[Template]) -> bytes:
    template = rng.choice(templates)
    if rng.random() < 0.5:
        return _mutate_message(rng, template)
    return _mutate_bytes(
        rng, encode_request(template.method, template.uri, template.headers, template.body)
    )


def expected_answers(data: bytes, settings: Settings) -> tuple[set[tuple[str, str]], bool]:
    """What the server must answer, by its own codec: (Call-ID, CSeq) of every request it
    will see, and whether it must close (framing lost)."""
    codec = SipCodec(
        max_header_bytes=settings.sip.max_header_bytes,
        max_body_bytes=settings.sip.max_body_bytes,
        drop_2xx_responses=True,
    )
    try:
        items = codec.feed(data)
    except FramingLost:
        return set(), True
    out: set[tuple[str, str]] = set()
    for item in items:
        msg = item.message if isinstance(item, BadMessage) else item
        if isinstance(msg, SipMessage) and msg.is_request and msg.method != "ACK":
            out.add((msg.get("Call-ID") or "", msg.get("CSeq") or ""))
    return out, False


def _answered(client: PchatClient, want: set[tuple[str, str]]) -> bool:
    seen = {(r.get("Call-ID") or "", r.get("CSeq") or "") for r in client.responses}
    return want <= seen


class Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def tracebacks() -> Iterator[Tracebacks]:
    handler = Tracebacks()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


async def _one_case(worker: RunningWorker, rng: random.Random, room: str, n: int) -> str:
    """Runs one case; returns its outcome ("answered", "closed", "partial")."""
    user = USERS[n % len(USERS)]
    in_dialog = rng.random() < 0.7
    client = await PchatClient.connect("127.0.0.1", worker.sip_port, f"{user}@{DOMAIN}", PASSWORD)
    if in_dialog:
        await client.provision()
        await client.invite()
        templates = _templates(client, room)
    else:
        templates = _unsigned_templates(worker.sip_port)
    data = case_bytes(rng, templates)
    marker_headers = [
        (k, f"marker-{n}" if k == "Call-ID" else "99 OPTIONS" if k == "CSeq" else v)
        for k, v in client._headers("OPTIONS", 99, in_dialog, ())
    ]
    marker = encode_request("OPTIONS", f"sip:pchat@{DOMAIN}", marker_headers)
    want, must_close = expected_answers(data + marker, worker.settings)
    client.responses.clear()
    client.send_raw(data + marker)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ANSWER_TIMEOUT_S
    outcome = ""
    while loop.time() < deadline:
        if client.closed.is_set():
            outcome = "closed"
            break
        if not must_close and _answered(client, want):
            outcome = "answered" if (f"marker-{n}", "99 OPTIONS") in want else "partial"
            break
        await asyncio.sleep(0.005)
    if client._transport is not None:
        client._transport.abort()  # no BYE: its answer is not what is tested
    await client.closed.wait()
    assert outcome, f"seed {SEED} case {n}: no answer to {sorted(want)} for {data[:300]!r}"
    return outcome


async def test_fuzzed_messages_are_answered_or_closed(
    fuzzed: RunningWorker, tracebacks: Tracebacks
) -> None:
    room = await add_room(fuzzed.store, "Fuzz Room")
    rng = random.Random(SEED)
    outcomes: dict[str, int] = {}
    for n in range(CASES):
        case_rng = random.Random(rng.getrandbits(64))  # each case reproducible on its own
        outcome = await _one_case(fuzzed, case_rng, room, n)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("answered", 0) > CASES // 4, outcomes  # most cases reach the server
    assert not tracebacks.records, [r.getMessage() for r in tracebacks.records[:5]]
    for _ in range(100):  # replies of the last cases may still be in flight
        if fuzzed.gateway.admission.inflight == 0:
            break
        await asyncio.sleep(0.05)
    assert fuzzed.gateway.admission.inflight == 0, "an admission place leaked"
    alice = await signed_in(fuzzed, "alice")
    await alice.join(room)
    assert await alice.post(room, "still here") > 0
    await alice.close()
    print(f"fuzz seed {SEED}: {CASES} cases, {outcomes}")
