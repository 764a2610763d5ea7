"""Unit tests for core.xccos.build: escaping, and build → decode round trips for every builder."""

from __future__ import annotations

import pytest

from core.errors import BadRequest
from core.xccos import build
from core.xccos.envelope import Command, Notice, Post, Reply, decode_envelope, decode_post
from core.xccos.xml import Element, parse_xml

ROOM = "ma-chan://example.com/0f1e2d3c"
ALICE = "sip:alice@example.com"

HOSTILE = [
    "plain",
    "",
    "quotes \" and ' both",
    "<script>alert('x')</script>",
    "&amp; already escaped &lt; stays literal",
    "a & b && c;",
    "]]> end of cdata",
    "tab\there, newline\nthere, cr\rthere, crlf\r\nend",
    "emoji \U0001f600\U0001f469\u200d\U0001f4bb and RTL \u202eevil",
    "non-BMP \U00010348 and BMP \ud7ff \ue000 \ufffd",
    "  leading and trailing spaces  ",
    "&#60; looks like a char ref",
    "<![CDATA[ x ]]>",
    "<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>",
]

# Characters XML 1.0 cannot carry, and what esc must turn each input into.
FORBIDDEN = [
    ("nul\x00byte", "nulbyte"),
    ("bell\x07 and esc\x1b", "bell and esc"),
    ("vt\x0b ff\x0c", "vt ff"),
    ("non-chars \ufffe\uffff", "non-chars "),
    ("lone \ud800 high and \udfff low", "lone  high and  low"),
]


def _roundtrip_attr(value: str) -> str:
    return parse_xml(f'<a v="{build.esc(value)}"/>').get("v")


def _roundtrip_text(value: str) -> str:
    return parse_xml(f"<a>{build.esc_text(value)}</a>").text


@pytest.mark.parametrize("value", HOSTILE)
def test_esc_roundtrips_exactly_in_attributes(value: str) -> None:
    assert _roundtrip_attr(value) == value


@pytest.mark.parametrize("value", HOSTILE)
def test_esc_text_roundtrips_exactly_in_content(value: str) -> None:
    assert _roundtrip_text(value) == value


@pytest.mark.parametrize("value", HOSTILE)
def test_esc_also_works_in_content(value: str) -> None:
    assert parse_xml(f"<a>{build.esc(value)}</a>").text == value


@pytest.mark.parametrize(("value", "kept"), FORBIDDEN)
def test_forbidden_characters_are_dropped_so_output_parses(value: str, kept: str) -> None:
    assert _roundtrip_attr(value) == kept
    assert _roundtrip_text(value) == kept
    build.envelope(1, build.post(ROOM, ALICE, value)).decode("utf-8")  # encodable


def test_esc_escapes_all_five_and_whitespace() -> None:
    assert build.esc("&<>\"'") == "&amp;&lt;&gt;&quot;&apos;"
    assert build.esc("a\tb\nc\rd") == "a&#9;b&#10;c&#13;d"
    assert build.esc_text("&<>\"'\n\t\r") == "&amp;&lt;&gt;\"'\n\t&#13;"


def test_esc_returns_printable_text_unchanged() -> None:
    for value in ("sip:alice@example.com", ROOM, "Grüße \U0001f600"):
        assert build.esc(value) == value


def test_envelope_is_the_exact_wire_header() -> None:
    assert build.envelope(17, "<x/>") == (
        b'<xccos ver="1" envid="17" xmlns="urn:parlano:xml:ns:xccos"><x/></xccos>'
    )
    assert build.envelope('9"', "").startswith(b'<xccos ver="1" envid="9&quot;"')


def test_grpchat_is_the_exact_wire_shape() -> None:
    assert build.grpchat(ROOM, ALICE, "2026-11-25T10:00:00.123Z", 42, "hi & bye") == (
        f'<grpchat id="grpchat" seqid="1" chanUri="{ROOM}" author="{ALICE}"'
        ' ts="2026-11-25T10:00:00.123Z" msgid="42"><chat>hi &amp; bye</chat></grpchat>'
    )


def _single(body: bytes) -> object:
    env = decode_envelope(body)
    assert len(env.items) == 1
    return env.items[0]


def test_cmd_roundtrip_with_data() -> None:
    data = build.chanid(ROOM) + '<bcq><last cnt="25"/></bcq>'
    body = build.envelope(7, build.cmd("cmd:bccontext", 3, data))
    env = decode_envelope(body)
    assert env.envid == "7"
    [item] = env.items
    assert isinstance(item, Command)
    assert (item.name, item.seqid) == ("cmd:bccontext", "3")
    assert item.data is not None
    assert [c.tag for c in item.data.children] == ["chanid", "bcq"]


def test_cmd_roundtrip_empty_data_is_an_empty_element() -> None:
    item = _single(build.envelope(1, build.cmd("cmd:requri", "1")))
    assert isinstance(item, Command)
    assert item.data is not None and item.data.children == [] and item.data.text == ""
    assert build.cmd("cmd:requri", 1) == '<cmd id="cmd:requri" seqid="1"><data/></cmd>'


@pytest.mark.parametrize("code", sorted(build.RESULT_TEXT))
def test_rpl_roundtrip_every_code(code: int) -> None:
    body = build.envelope(99, build.rpl("rpl:join", 5, "1", "123456", code, build.uib(ALICE)))
    item = _single(body)
    assert isinstance(item, Reply) and item.data is not None
    assert item == Reply("rpl:join", "5", "1", "123456", code, build.RESULT_TEXT[code], item.data)
    assert item.data.children[0].get("uri") == ALICE


def test_rpl_default_code_is_success() -> None:
    item = _single(build.envelope(1, build.rpl("rpl:part", 1, "4", "77")))
    assert isinstance(item, Reply)
    assert (item.code, item.text, item.command_seqid, item.command_envid) == (
        200,
        "SUCCESS_OK",
        "4",
        "77",
    )


def test_rpl_unknown_code_still_builds() -> None:
    item = _single(build.envelope(1, build.rpl("rpl:x", 1, "1", "1", 418)))
    assert isinstance(item, Reply) and item.code == 418 and item.text == "ERROR"


def test_ntc_roundtrip() -> None:
    data = build.uib(ALICE, inner=build.aib("3984", "0f1e2d3c", domain="example.com"))
    item = _single(build.envelope(2, build.ntc("ntc:join", data)))
    assert isinstance(item, Notice) and item.name == "ntc:join"
    assert item.data is not None
    uib = item.data.find("uib")
    assert uib is not None and uib.get("uri") == ALICE
    aib = uib.find("aib")
    assert aib is not None and aib.attrs == {
        "key": "3984",
        "domain": "example.com",
        "value": "0f1e2d3c",
    }


@pytest.mark.parametrize("text", HOSTILE)
def test_grpchat_roundtrip_hostile_text(text: str) -> None:
    body = build.envelope(3, build.grpchat(ROOM, ALICE, "2026-11-25T10:00:00.123Z", 42, text))
    assert _single(body) == Post(ROOM, ALICE, "2026-11-25T10:00:00.123Z", "42", "1", text)


def test_grpchat_hostile_attributes_roundtrip() -> None:
    uri, author = 'ma-chan://d/"<&>"', "sip:o'brien@example.com"
    body = build.envelope(3, build.grpchat(uri, author, "t", "m&1", "x", seqid="s<1"))
    assert _single(body) == Post(uri, author, "t", "m&1", "s<1", "x")


@pytest.mark.parametrize("text", HOSTILE)
def test_post_roundtrip(text: str) -> None:
    body = build.envelope(4, build.post(ROOM, ALICE, text, seqid=9))
    assert _single(body) == Post(ROOM, ALICE, "", "", "9", text)


def test_post_with_ts_and_without_msgid() -> None:
    built = build.post(ROOM, ALICE, "x", ts="2026-11-25T10:00:00.000Z")
    assert "msgid" not in built
    item = _single(build.envelope(4, built))
    assert item == Post(ROOM, ALICE, "2026-11-25T10:00:00.000Z", "", "1", "x")


@pytest.mark.parametrize("text", HOSTILE[:6])
def test_msg_history_roundtrip_inside_rpl_bccontext(text: str) -> None:
    history = build.msg(ROOM, ALICE, "2026-11-25T10:00:00.001Z", 1, text) + build.msg(
        ROOM, "sip:bob@example.com", "2026-11-25T10:00:00.002Z", "2", "second"
    )
    body = build.envelope(
        5, build.rpl("rpl:bccontext", 1, "1", "8", data=build.chanib(ROOM, inner=history))
    )
    item = _single(body)
    assert isinstance(item, Reply) and item.data is not None
    chanib = item.data.find("chanib")
    assert chanib is not None and chanib.get("uri") == ROOM
    msgs = chanib.findall("msg")
    assert [m.get("id") for m in msgs] == ["grpchat", "grpchat"]
    assert [decode_post(m) for m in msgs] == [
        Post(ROOM, ALICE, "2026-11-25T10:00:00.001Z", "1", "", text),
        Post(ROOM, "sip:bob@example.com", "2026-11-25T10:00:00.002Z", "2", "", "second"),
    ]


def test_uib_forms() -> None:
    assert build.uib(ALICE) == f'<uib uri="{ALICE}"/>'
    assert build.uib(ALICE, id=0, name="Alice") == f'<uib id="0" uri="{ALICE}" name="Alice"/>'
    el = parse_xml(build.uib(ALICE, id="3", name='A "quoted" <name>', inner="<x/>"))
    assert el.attrs == {"id": "3", "uri": ALICE, "name": 'A "quoted" <name>'}
    assert [c.tag for c in el.children] == ["x"]


def test_aib_forms() -> None:
    assert build.aib("3984", "0,1,5") == '<aib key="3984" value="0,1,5"/>'
    assert parse_xml(build.aib("k", "v&", domain="d")).attrs == {
        "key": "k",
        "domain": "d",
        "value": "v&",
    }


def _by_id(el: Element, tag: str) -> dict[str, str]:
    return {c.get("id"): c.text for c in el.findall(tag)}


def test_chanib_with_every_option_roundtrips() -> None:
    built = build.chanib(
        ROOM,
        name="Room <1>",
        description='desc "quoted"',
        topic="topic & more",
        category="ma-cat://example.com/cat",
        ucnt=7,
        visibility="private",
        filepost=True,
        invite=False,
        logged=True,
        room_type="auditorium",
        inner=build.aib("3984", "0,1"),
        extra_attrs={"lastmsgid": "12", "unread": "3"},
    )
    rpl = build.rpl("rpl:join", 1, "1", "1", data=build.uib(ALICE, id=0) + built)
    item = _single(build.envelope(1, rpl))
    assert isinstance(item, Reply) and item.data is not None
    ch = item.data.find("chanib")
    assert ch is not None
    assert ch.attrs == {
        "uri": ROOM,
        "name": "Room <1>",
        "description": 'desc "quoted"',
        "topic": "topic & more",
        "category": "ma-cat://example.com/cat",
        "lastmsgid": "12",
        "unread": "3",
    }
    assert _by_id(ch, "info") == {
        "urn:parlano:ma:info:ucnt": "7",
        "urn:parlano:ma:info:visibilty": "private",
    }
    assert _by_id(ch, "prop") == {
        "urn:parlano:ma:prop:filepost": "true",
        "urn:parlano:ma:prop:invite": "false",
        "urn:parlano:ma:prop:logged": "true",
        "urn:pchat:prop:type": "auditorium",
    }
    assert [c.tag for c in ch.children][-1] == "aib"  # inner comes after info/prop


def test_chanib_minimal_is_self_closing_and_omits_none() -> None:
    assert build.chanib(ROOM) == f'<chanib uri="{ROOM}"/>'
    el = parse_xml(build.chanib(ROOM, name="", ucnt=0, filepost=False))
    assert el.attrs == {"uri": ROOM, "name": ""}  # "" is given, so present
    assert _by_id(el, "info") == {"urn:parlano:ma:info:ucnt": "0"}
    assert _by_id(el, "prop") == {"urn:parlano:ma:prop:filepost": "false"}


def test_chanid_splits_the_room_uri() -> None:
    assert build.chanid(ROOM) == '<chanid key="0" domain="example.com" value="0f1e2d3c"/>'
    with pytest.raises(BadRequest):
        build.chanid("ma-cat://example.com/x")


def test_chanerr_roundtrip() -> None:
    el = parse_xml(build.chanerr(ROOM, 403, "closed room <members only>"))
    assert el.tag == "chanerr"
    assert el.attrs == {"uri": ROOM, "code": "403"}
    assert el.text == "closed room <members only>"


def test_several_rpl_and_ntc_siblings_decode_in_order() -> None:
    inner = (
        build.rpl("rpl:join", 1, "1", "500", data=build.chanib(ROOM))
        + build.ntc("ntc:join", build.uib(ALICE))
        + build.rpl("rpl:bjoin", 2, "2", "501", code=403)
        + build.ntc("ntc:part", build.chanib(ROOM, inner=build.uib(ALICE)))
        + build.grpchat(ROOM, ALICE, "t", 1, "hello")
    )
    env = decode_envelope(build.envelope(1000, inner))
    assert [type(i).__name__ for i in env.items] == ["Reply", "Notice", "Reply", "Notice", "Post"]
    names = [getattr(i, "name", None) for i in env.items]
    assert names == ["rpl:join", "ntc:join", "rpl:bjoin", "ntc:part", None]
    third = env.items[2]
    assert isinstance(third, Reply) and third.code == 403 and third.command_envid == "501"
