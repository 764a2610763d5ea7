"""Unit tests for core.xccos.envelope and core.xccos.ids: decoding, the post fast path, ids."""

from __future__ import annotations

import random

import pytest

from core.errors import BadRequest, BadXml, PchatError, TooLarge
from core.xccos import build
from core.xccos import envelope as envelope_module
from core.xccos.envelope import (
    Command,
    Envelope,
    Notice,
    Post,
    Reply,
    decode_envelope,
    decode_post_fast,
)
from core.xccos.ids import (
    category_uri,
    parse_room_uri,
    parse_ts,
    room_refs,
    room_uri,
    ts_iso,
)
from core.xccos.xml import Element, parse_xml

ROOM = "ma-chan://example.com/0f1e2d3c"
ALICE = "sip:alice@example.com"
HEAD = '<xccos ver="1" envid="17" xmlns="urn:parlano:xml:ns:xccos">'


def _env(inner: str, head: str = HEAD) -> bytes:
    return f"{head}{inner}</xccos>".encode()


# ---- decode_envelope ------------------------------------------------------


def test_decode_command() -> None:
    env = decode_envelope(
        _env('<cmd id="cmd:join" seqid="1"><data><chanib uri="' + ROOM + '"/></data></cmd>')
    )
    assert env.envid == "17"
    [item] = env.items
    assert isinstance(item, Command)
    assert (item.name, item.seqid) == ("cmd:join", "1")
    assert room_refs(item.data) == [ROOM]


def test_decode_command_without_data() -> None:
    [item] = decode_envelope(_env('<cmd id="cmd:requri" seqid="1"/>')).items
    assert item == Command("cmd:requri", "1", None)


def test_decode_reply_and_notice_with_whitespace_between() -> None:
    body = _env(
        '\n  <rpl id="rpl:part" seqid="2">\n <commandid seqid="1" envid="9"/>'
        '<resp code="404"> NOT_FOUND </resp></rpl>\n  <ntc id="ntc:part"><data/></ntc>\n'
    )
    first, second = decode_envelope(body).items
    assert first == Reply("rpl:part", "2", "1", "9", 404, "NOT_FOUND", None)
    assert isinstance(second, Notice) and second.name == "ntc:part"
    assert second.data is not None and second.data.tag == "data"


def test_decode_sipe_style_post_with_crlf_text() -> None:
    body = _env(
        f'<grpchat id="grpchat" seqid="1" chanUri="{ROOM}" author="{ALICE}" '
        'ts="2026-11-25T10:00:00.000Z"><chat>line1\r\nline &lt;2&gt;</chat></grpchat>'
    )
    [item] = decode_envelope(body).items
    assert item == Post(ROOM, ALICE, "2026-11-25T10:00:00.000Z", "", "1", "line1\nline <2>")


def test_empty_envelope_has_no_items() -> None:
    assert decode_envelope(_env("")) == Envelope("17", [])


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'<xcco envid="1"/>', "not <xccos>"),
        (b'<grpchat envid="1"/>', "not <xccos>"),
        (b"<xccos/>", "without envid"),
        (b'<xccos envid=""/>', "without envid"),
        (_env("<foo/>"), "unknown envelope item"),
        (_env('<cmd id="cmd:join" seqid="1"/><bogus/>'), "unknown envelope item"),
        (_env("stray text<cmd id='cmd:x' seqid='1'/>"), "text directly inside"),
        (_env('<cmd seqid="1"/>'), "without id"),
        (_env('<cmd id="cmd:join"/>'), "without seqid"),
        (_env('<cmd id="join" seqid="1"/>'), "does not start with"),
        (_env('<rpl id="rpl:join" seqid="1"><resp code="200"/></rpl>'), "commandid"),
        (_env('<rpl id="rpl:join" seqid="1"><commandid seqid="1" envid="1"/></rpl>'), "resp"),
        (
            _env('<rpl id="rpl:j" seqid="1"><commandid seqid="1"/><resp code="200"/></rpl>'),
            "without envid",
        ),
        (
            _env(
                '<rpl id="rpl:j" seqid="1"><commandid seqid="1" envid="1"/><resp code="x"/></rpl>'
            ),
            "bad resp code",
        ),
        (
            _env(
                '<rpl id="rpl:j" seqid="1"><commandid seqid="1" envid="1"/><resp code="²"/></rpl>'
            ),
            "bad resp code",
        ),
        (
            _env(
                '<rpl id="rpl:j" seqid="1"><commandid seqid="1" envid="1"/><resp code="١"/></rpl>'
            ),
            "bad resp code",
        ),
        (
            _env('<rpl id="rpl:j" seqid="1"><commandid seqid="1" envid="1"/><resp/></rpl>'),
            "without code",
        ),
        (_env('<ntc id="rpl:join"/>'), "does not start with"),
        (_env("<ntc/>"), "without id"),
        (_env('<grpchat seqid="1" author="a"><chat>x</chat></grpchat>'), "without chanUri"),
        (_env(f'<grpchat chanUri="{ROOM}"><chat>x</chat></grpchat>'), "without seqid"),
        (_env(f'<grpchat chanUri="{ROOM}" seqid="1"/>'), "without chat"),
        (_env(f'<grpchat chanUri="{ROOM}" seqid="1"><chat>a<b>x</b></chat></grpchat>'), "plain"),
    ],
)
def test_bad_envelopes_are_bad_requests(body: bytes, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        decode_envelope(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml at all",
        _env('<cmd id="cmd:join" seqid="1">'),
        _env("") + b"<xccos/>",
        b'<!DOCTYPE x [<!ENTITY a "b">]><xccos envid="1">&a;</xccos>',
        _env("<cmd id='cmd:x' seqid='1'><data>&xxe;</data></cmd>"),
    ],
)
def test_malformed_or_hostile_envelopes_are_badxml(body: bytes) -> None:
    with pytest.raises(BadXml):
        decode_envelope(body)


def test_oversized_envelope_is_too_large() -> None:
    body = build.envelope(1, build.post(ROOM, ALICE, "x" * 70000))
    with pytest.raises(TooLarge):
        decode_envelope(body)
    assert decode_envelope(body, max_bytes=len(body)).envid == "1"
    with pytest.raises(TooLarge):
        decode_envelope(body, max_bytes=len(body) - 1)


def test_too_deep_envelope_is_refused() -> None:
    deep = "<data>" + "<x>" * 40 + "</x>" * 40 + "</data>"
    with pytest.raises(BadXml, match="deeper"):
        decode_envelope(_env(f'<cmd id="cmd:x" seqid="1">{deep}</cmd>'))


def test_errors_carry_a_wire_status() -> None:
    with pytest.raises(PchatError) as info:
        decode_envelope(b"<nope")
    assert info.value.sip_status == 400 and info.value.xccos_code == 400


# ---- decode_post_fast -----------------------------------------------------

SIPE_POST = (
    '<xccos ver="1" envid="1804289383" xmlns="urn:parlano:xml:ns:xccos">'
    f'<grpchat id="grpchat" seqid="1" chanUri="{ROOM}" author="{ALICE}"'
    ' ts="2026-11-25T10:00:00.000Z"><chat>hello world</chat></grpchat></xccos>'
)


def test_fast_path_decodes_the_client_post() -> None:
    assert decode_post_fast(SIPE_POST.encode()) == (
        "1804289383",
        Post(ROOM, ALICE, "2026-11-25T10:00:00.000Z", "", "1", "hello world"),
    )


def test_fast_path_attribute_order_quotes_and_whitespace() -> None:
    body = (
        "\n <xccos xmlns='urn:parlano:xml:ns:xccos'  envid = '5' ver=\"1\" >\r\n"
        f"  <grpchat author='{ALICE}' chanUri=\"{ROOM}\"\tseqid='3' id='grpchat' >\n"
        "    <chat >multi\nline\ttext</chat >\n  </grpchat\n></xccos >\n"
    )
    assert decode_post_fast(body.encode()) == (
        "5",
        Post(ROOM, ALICE, "", "", "3", "multi\nline\ttext"),
    )


def test_fast_path_unescapes_entities_and_normalises_newlines() -> None:
    body = _env(
        '<grpchat seqid="1" chanUri="ma-chan://d/&#x41;&amp;" author="o&apos;b&quot;">'
        "<chat>&lt;b&gt; &amp;amp; &#65;&#x1F600; a\r\nb\rc&#13;</chat></grpchat>"
    )
    result = decode_post_fast(body)
    assert result is not None
    assert result[1] == Post(
        "ma-chan://d/A&", "o'b\"", "", "", "1", "<b> &amp; A\U0001f600 a\nb\nc\r"
    )


def test_fast_path_takes_what_build_produces() -> None:
    for text in ("", "x", "a < b & \"c\" 'd'", "tab\tcrlf\r\nemoji \U0001f600", "]]>"):
        body = build.envelope(77, build.post(ROOM, ALICE, text, seqid=4, ts="t"))
        assert decode_post_fast(body) == ("77", Post(ROOM, ALICE, "t", "", "4", text))
    delivered = build.envelope(78, build.grpchat(ROOM, ALICE, "t", 9, "hi"))
    assert decode_post_fast(delivered) == ("78", Post(ROOM, ALICE, "t", "9", "1", "hi"))


NOT_FAST = {
    "command": _env('<cmd id="cmd:join" seqid="1"><data/></cmd>'),
    "two posts": _env(
        f'<grpchat seqid="1" chanUri="{ROOM}"><chat>a</chat></grpchat>'
        f'<grpchat seqid="2" chanUri="{ROOM}"><chat>b</chat></grpchat>'
    ),
    "doctype": b'<!DOCTYPE x [<!ENTITY e "boom">]>'
    + _env(f'<grpchat seqid="1" chanUri="{ROOM}"><chat>&e;</chat></grpchat>'),
    "xml declaration": b'<?xml version="1.0"?>'
    + _env(f'<grpchat seqid="1" chanUri="{ROOM}"><chat>a</chat></grpchat>'),
    "markup in chat": _env(f'<grpchat seqid="1" chanUri="{ROOM}"><chat>a<b/>c</chat></grpchat>'),
    "cdata in chat": _env(
        f'<grpchat seqid="1" chanUri="{ROOM}"><chat><![CDATA[x]]></chat></grpchat>'
    ),
    "comment": _env(f'<grpchat seqid="1" chanUri="{ROOM}"><chat>a<!--c--></chat></grpchat>'),
    "undefined entity": _env(f'<grpchat seqid="1" chanUri="{ROOM}"><chat>&xxe;</chat></grpchat>'),
    "bare ampersand": _env(f'<grpchat seqid="1" chanUri="{ROOM}"><chat>a & b</chat></grpchat>'),
    "entity in attr": _env(f'<grpchat seqid="1" chanUri="{ROOM}&x;"><chat>a</chat></grpchat>'),
    "invalid char ref": _env(f'<grpchat seqid="1" chanUri="{ROOM}"><chat>&#0;</chat></grpchat>'),
    "surrogate char ref": _env(
        f'<grpchat seqid="1" chanUri="{ROOM}"><chat>&#xD800;</chat></grpchat>'
    ),
    "control char": _env(f'<grpchat seqid="1" chanUri="{ROOM}"><chat>a\x01</chat></grpchat>'),
    "non-character": _env(f'<grpchat seqid="1" chanUri="{ROOM}"><chat>\ufffe</chat></grpchat>'),
    "cdata end": _env(f'<grpchat seqid="1" chanUri="{ROOM}"><chat>a]]>b</chat></grpchat>'),
    "missing chanUri": _env('<grpchat seqid="1"><chat>a</chat></grpchat>'),
    "missing seqid": _env(f'<grpchat chanUri="{ROOM}"><chat>a</chat></grpchat>'),
    "missing envid": _env(
        f'<grpchat seqid="1" chanUri="{ROOM}"><chat>a</chat></grpchat>', "<xccos ver='1'>"
    ),
    "duplicate attr": _env(
        f'<grpchat seqid="1" seqid="2" chanUri="{ROOM}"><chat>a</chat></grpchat>'
    ),
    "prefixed attr": _env(f'<grpchat seqid="1" chanUri="{ROOM}" x:y="1"><chat>a</chat></grpchat>'),
    "unknown attr": _env(f'<grpchat seqid="1" chanUri="{ROOM}" z="1"><chat>a</chat></grpchat>'),
    "other namespace": _env(
        f'<grpchat seqid="1" chanUri="{ROOM}"><chat>a</chat></grpchat>',
        '<xccos envid="1" xmlns="urn:other">',
    ),
    "newline in attr": _env(f'<grpchat seqid="1" chanUri="{ROOM}\n"><chat>a</chat></grpchat>'),
    "lt in attr": _env(f'<grpchat seqid="1" chanUri="{ROOM}<"><chat>a</chat></grpchat>'),
    "no space between attrs": _env(f'<grpchat seqid="1"chanUri="{ROOM}"><chat>a</chat></grpchat>'),
    "trailing junk": _env(f'<grpchat seqid="1" chanUri="{ROOM}"><chat>a</chat></grpchat>') + b"x",
    "text in grpchat": _env(f'<grpchat seqid="1" chanUri="{ROOM}">t<chat>a</chat></grpchat>'),
    "invalid utf-8": _env(
        f'<grpchat seqid="1" chanUri="{ROOM}"><chat>\xff</chat></grpchat>'
    ).replace(b"\xc3\xbf", b"\xff"),
    "bom": b"\xef\xbb\xbf" + _env(f'<grpchat seqid="1" chanUri="{ROOM}"><chat>a</chat></grpchat>'),
    "other root": f'<xccosx envid="1"><grpchat seqid="1" chanUri="{ROOM}"><chat>a</chat>'
    "</grpchat></xccosx>".encode(),
}


@pytest.mark.parametrize("body", list(NOT_FAST.values()), ids=list(NOT_FAST))
def test_fast_path_declines_anything_off_shape(body: bytes) -> None:
    assert decode_post_fast(body) is None


def test_fast_path_declines_over_max_bytes() -> None:
    body = build.envelope(1, build.post(ROOM, ALICE, "x" * 100))
    assert decode_post_fast(body, max_bytes=len(body)) is not None
    assert decode_post_fast(body, max_bytes=len(body) - 1) is None
    assert decode_post_fast(build.envelope(1, build.post(ROOM, ALICE, "x" * 70000))) is None


def _slow(body: bytes) -> Envelope | None:
    try:
        return decode_envelope(body)
    except PchatError:
        return None


def _agrees(body: bytes) -> bool:
    """The fast path's contract: when it answers, decode_envelope says exactly the same."""
    fast = decode_post_fast(body)
    if fast is None:
        return True
    envid, post = fast
    return _slow(body) == Envelope(envid, [post])


SEEDS = [
    SIPE_POST,
    build.envelope(3, build.post(ROOM, ALICE, "a < b & \"c\" 'd' \U0001f600", seqid=7)).decode(),
    build.envelope("x&y", build.grpchat(ROOM, ALICE, "t", 9, "line\r\nline\ttab")).decode(),
    "<xccos envid='1'>\n<grpchat chanUri='ma-chan://d/r' seqid='2'>\n<chat>&#65;&amp;&#x42;</chat>"
    "\n</grpchat>\n</xccos>\n",
]
# Tokens chosen to break XML in every way the fast path must notice.
TOKENS = [
    "<",
    ">",
    "&",
    "'",
    '"',
    "=",
    " ",
    "\t",
    "\r",
    "\n",
    "\x00",
    "\x1f",
    "\ufffe",
    "]]>",
    "&lt;",
    "&#0;",
    "&#xD800;",
    "&#x10FFFF;",
    "&bogus;",
    "&#38;",
    "<!--x-->",
    "<![CDATA[x]]>",
    "<?pi?>",
    "<!DOCTYPE x>",
    " x:y='1'",
    " seqid='9'",
    " msgid='3'",
    ' ts="t"',
    "<chat>",
    "</chat>",
    "<b/>",
    "\U0001f600",
    "é",
]


def _mutants(seed: str, rng: random.Random) -> list[str]:
    out = [seed[:i] + seed[i + 1 :] for i in range(len(seed))]  # every single deletion
    for token in TOKENS:  # every token at every position
        out.extend(seed[:p] + token + seed[p:] for p in range(len(seed) + 1))
    for _ in range(500):  # and a few random double edits
        p, q = sorted(rng.sample(range(len(seed) + 1), k=2))
        out.append(seed[:p] + rng.choice(TOKENS) + seed[p:q] + rng.choice(TOKENS) + seed[q:])
    out.extend(seed[:i] for i in range(len(seed)))  # truncations
    return out


def test_fast_path_agrees_with_decode_envelope_on_mutated_inputs() -> None:
    rng = random.Random(20261125)
    accepted = checked = 0
    for seed in SEEDS:
        assert decode_post_fast(seed.encode()) is not None, seed  # the seeds are on the fast path
        for mutant in _mutants(seed, rng):
            body = mutant.encode("utf-8", "surrogatepass")
            assert _agrees(body), mutant
            checked += 1
            accepted += decode_post_fast(body) is not None
    # Guard against a vacuous pass: many mutants must still take the fast path.
    assert checked > 20000 and accepted > 2000


def test_seeds_exercise_both_fast_path_regexes() -> None:
    # The agreement test is only as good as its seeds: both shapes must be reached.
    canonical = [s for s in SEEDS if envelope_module._CANONICAL.fullmatch(s)]
    general = [s for s in SEEDS if envelope_module._GENERAL.fullmatch(s)]
    assert len(canonical) >= 2 and len(general) == len(SEEDS)


def test_fast_path_agrees_on_every_build_output() -> None:
    texts = ["", "x", "&", "<>", "\r\n", "\t", "\x00\x1f", "\ud800", "]]>", "\U0001f600", "&#65;"]
    for text in texts:
        for built in (
            build.post(ROOM, ALICE, text),
            build.post(text or "x", text, text, seqid=text or "1", ts=text),
            build.grpchat(ROOM, ALICE, text, text or "1", text),
        ):
            body = build.envelope(text or "1", built)
            assert _agrees(body), body
            if _slow(body) is not None:
                assert decode_post_fast(body) is not None, body


# ---- ids ------------------------------------------------------------------


def test_room_and_category_uris() -> None:
    assert room_uri("example.com", "abc") == "ma-chan://example.com/abc"
    assert category_uri("example.com", "c1") == "ma-cat://example.com/c1"
    assert parse_room_uri(room_uri("example.com", "abc")) == ("example.com", "abc")


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "ma-chan://",
        "ma-chan://example.com",
        "ma-chan://example.com/",
        "ma-chan:///abc",
        "ma-chan://example.com/a/b",
        "ma-chan://exa mple.com/a",
        "ma-chan://example.com/a b",
        "ma-cat://example.com/abc",
        "sip:alice@example.com",
        "MA-CHAN://example.com/abc",
    ],
)
def test_parse_room_uri_rejects(uri: str) -> None:
    with pytest.raises(BadRequest):
        parse_room_uri(uri)


def test_room_refs_in_document_order() -> None:
    data = parse_xml(
        '<data><chanid key="0" domain="d1" value="a"/><chanib uri="ma-chan://d2/b"/>'
        '<bcq><chanib uri="ma-chan://nested/ignored"/></bcq>'
        '<chanid key="1" domain="d3" value="c"/></data>'
    )
    assert room_refs(data) == ["ma-chan://d1/a", "ma-chan://d2/b", "ma-chan://d3/c"]
    assert room_refs(None) == []
    assert room_refs(parse_xml("<data/>")) == []


@pytest.mark.parametrize(
    "data",
    [
        "<data><chanib/></data>",
        '<data><chanib uri=""/></data>',
        '<data><chanid key="0" value="v"/></data>',
        '<data><chanid key="0" domain="d"/></data>',
        '<data><chanib uri="ma-chan://d/a"/><chanid domain="d" value=""/></data>',
    ],
)
def test_room_refs_rejects_incomplete_references(data: str) -> None:
    with pytest.raises(BadRequest):
        room_refs(parse_xml(data))


def test_room_refs_roundtrip_with_builders() -> None:
    rooms = [room_uri("example.com", str(i)) for i in range(5)]
    data = "".join(build.chanid(r) if i % 2 else build.chanib(r) for i, r in enumerate(rooms))
    [item] = decode_envelope(build.envelope(1, build.cmd("cmd:bjoin", 1, data))).items
    assert isinstance(item, Command) and room_refs(item.data) == rooms


@pytest.mark.parametrize(
    ("ms", "iso"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_795_600_800_123, "2026-11-25T10:00:00.123Z"),
        (951_782_400_999, "2000-02-29T00:00:00.999Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
    ],
)
def test_ts_iso_and_parse_ts(ms: int, iso: str) -> None:
    assert ts_iso(ms) == iso
    assert parse_ts(iso) == ms


def test_ts_iso_second_cache_never_leaks_between_seconds() -> None:
    a, b = 1_795_600_800_000, 1_795_600_801_000
    assert [ts_iso(a + 5), ts_iso(b + 6), ts_iso(a + 7), ts_iso(b)] == [
        "2026-11-25T10:00:00.005Z",
        "2026-11-25T10:00:01.006Z",
        "2026-11-25T10:00:00.007Z",
        "2026-11-25T10:00:01.000Z",
    ]


def test_parse_ts_inverts_ts_iso_over_a_range() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        ms = rng.randrange(0, 4_102_444_800_000)  # up to 2100
        assert parse_ts(ts_iso(ms)) == ms


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("2026-11-25T10:00:00Z", 1_795_600_800_000),
        ("2026-11-25T10:00:00.1Z", 1_795_600_800_100),
        ("2026-11-25T10:00:00.6206356Z", 1_795_600_800_620),  # OCS serverTime precision
        ("2026-11-25T10:00:00.123+00:00", 1_795_600_800_123),
    ],
)
def test_parse_ts_accepts_other_precisions(value: str, ms: int) -> None:
    assert parse_ts(value) == ms


@pytest.mark.parametrize(
    "value",
    [
        "",
        "junk",
        "2026-11-25",
        "2026-11-25 10:00:00.000Z",
        "2026-11-25T10:00:00.000",
        "2026-11-25T10:00:00.000+01:00",
        "2026-13-01T00:00:00.000Z",
        "2026-02-30T00:00:00.000Z",
        "2026-11-25T24:00:00.000Z",
        "2026-11-25T10:00:60.000Z",
        "2026-11-25T10:00:00.Z",
        "２０２６-11-25T10:00:00.000Z",
        "2026-11-25T10:00:00.000Zjunk",
    ],
)
def test_parse_ts_rejects_junk(value: str) -> None:
    with pytest.raises(BadRequest):
        parse_ts(value)


# ---- decode_exchange_fast: a sign-in's commands and replies ------------------


def _tree(el: Element | None) -> object:
    if el is None:
        return None
    return (el.tag, el.attrs, el.text, [_tree(c) for c in el.children])


def _shape(env: Envelope | None) -> object:
    """Envelopes compared by value (Element has identity equality)."""
    if env is None:
        return None
    items = []
    for item in env.items:
        if isinstance(item, Command):
            items.append(("cmd", item.name, item.seqid, _tree(item.data)))
        elif isinstance(item, Reply):
            fields = (item.name, item.seqid, item.command_seqid, item.command_envid, item.code)
            items.append(("rpl", *fields, item.text, _tree(item.data)))
        else:
            items.append(("other", repr(item)))
    return env.envid, items


def _slow_tree(body: bytes) -> Envelope | None:
    try:
        return envelope_module._decode_tree(body, 65536, 16)
    except PchatError:
        return None


EXCHANGE_SEEDS = [
    build.envelope(12, build.cmd("cmd:getassociations", 1, '<assoc type="member"/>')).decode(),
    build.envelope(13, build.cmd("cmd:getinv", 1, '<inv inviteId="1" domain="d&amp;x"/>')).decode(),
    build.envelope(14, build.cmd("cmd:getserverinfo", 2)).decode(),
    build.envelope(15, build.rpl("rpl:getassoc", 1, "1", "12", 200)).decode(),
    build.envelope(
        16,
        build.rpl("rpl:getservinfo", 1, "1", "14", 200, '<sib a="1" b="x&gt;y"/><sib c=""/>'),
    ).decode(),
    build.envelope(17, build.rpl("rpl:join", 3, "2", "9", 404)).decode(),
]
EXCHANGE_TOKENS = [*TOKENS, "<data/>", "<data>", "</data>", " xmlns='x'", ' xmlns="y"', ' a="1"']


def test_exchange_fast_path_decodes_what_build_writes() -> None:
    body = build.envelope(12, build.cmd("cmd:getassociations", 1, '<assoc type="member"/>'))
    fast = envelope_module.decode_exchange_fast(body)
    assert fast is not None
    [cmd] = fast.items
    assert isinstance(cmd, Command) and (cmd.name, cmd.seqid) == ("cmd:getassociations", "1")
    assert cmd.data is not None and _tree(cmd.data.find("assoc")) == (
        "assoc", {"type": "member"}, "", [],
    )  # fmt: skip
    reply = envelope_module.decode_exchange_fast(
        build.envelope(3, build.rpl("rpl:x", 1, "1", "12"))
    )
    assert reply is not None and _shape(reply) == (
        "3", [("rpl", "rpl:x", "1", "1", "12", 200, "SUCCESS_OK", ("data", {}, "", []))],
    )  # fmt: skip
    # decode_envelope takes it first, and says the same as the full parser.
    assert _shape(decode_envelope(body)) == _shape(_slow_tree(body))


def test_exchange_fast_path_agrees_with_the_parser_on_mutated_inputs() -> None:
    rng = random.Random(20261203)
    accepted = checked = 0
    for seed in EXCHANGE_SEEDS:
        assert envelope_module.decode_exchange_fast(seed.encode()) is not None, seed
        for mutant in _mutants(seed, rng) + [
            seed[:p] + t + seed[p:] for t in EXCHANGE_TOKENS[-6:] for p in range(len(seed) + 1)
        ]:
            body = mutant.encode("utf-8", "surrogatepass")
            fast = envelope_module.decode_exchange_fast(body)
            checked += 1
            if fast is None:
                continue
            accepted += 1
            assert _shape(fast) == _shape(_slow_tree(body)), mutant
    # Not vacuous: many mutants still take the fast path, and were compared.
    assert checked > 20000 and accepted > 1000


def test_exchange_fast_path_declines_what_the_parser_refuses() -> None:
    refused = [
        _env('<cmd id="join" seqid="1"><data/></cmd>'),  # not cmd:
        _env('<cmd id="cmd:join" seqid=""><data/></cmd>'),
        _env('<cmd id="cmd:join" seqid="1"><data><a b="1" b="2"/></data></cmd>'),
        _env('<cmd id="cmd:join" seqid="1"><data><a b="&bogus;"/></data></cmd>'),
        _env('<cmd id="cmd:join" seqid="1"><data><a b="&#0;"/></data></cmd>'),
        b'<xccos ver="1" envid="" xmlns="urn:parlano:xml:ns:xccos"><cmd id="cmd:x" seqid="1"/>'
        b"</xccos>",
    ]
    for body in refused:
        assert envelope_module.decode_exchange_fast(body) is None, body
    # A namespace declared on a leaf is left to expat, which swallows it.
    body = _env('<cmd id="cmd:join" seqid="1"><data><a xmlns="urn:x" b="1"/></data></cmd>')
    assert envelope_module.decode_exchange_fast(body) is None
    assert decode_envelope(body).items[0].data is not None  # type: ignore[union-attr]
