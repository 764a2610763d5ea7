"""Unit tests for core/sip/message.py: the message model, encoders and address helpers."""

from __future__ import annotations

import pytest

from core.errors import BadRequest
from core.sip import message
from core.sip.codec import SipCodec
from core.sip.message import (
    REASONS,
    SipMessage,
    address_of,
    canonical_name,
    encode_message,
    encode_request,
    encode_response,
    parse_name_addr,
    response_to,
    tag_of,
)


def _request(headers: list[tuple[str, str]]) -> SipMessage:
    return SipMessage(method="INFO", uri="sip:pchat@example.com", headers=headers)


def _parse(raw: bytes) -> SipMessage:
    [msg] = SipCodec().feed(raw)
    assert isinstance(msg, SipMessage)
    return msg


@pytest.mark.parametrize(
    ("wire", "canon"),
    [
        ("call-id", "Call-ID"),
        ("CALL-ID", "Call-ID"),
        ("cseq", "CSeq"),
        ("www-authenticate", "WWW-Authenticate"),
        ("p-asserted-identity", "P-Asserted-Identity"),
        ("min-se", "Min-SE"),
        ("i", "Call-ID"),
        ("I", "Call-ID"),
        ("l", "Content-Length"),
        ("o", "Event"),
        ("x", "Session-Expires"),
        ("k", "Supported"),
        ("x-ms-client-thing", "X-Ms-Client-Thing"),
        ("ms-keep-ALIVE", "Ms-Keep-Alive"),
    ],
)
def test_canonical_name(wire: str, canon: str) -> None:
    assert canonical_name(wire) == canon


def test_name_cache_is_bounded_and_holds_only_tokens() -> None:
    for i in range(message._CANON_CACHE_MAX + 10):
        canonical_name(f"x-extension-{i}")
    assert len(message._CANON_CACHE) <= message._CANON_CACHE_MAX
    assert canonical_name("Bad Name") == "Bad name"
    assert "Bad Name" not in message._CANON_CACHE
    assert canonical_name("x-extension-99999") == "X-Extension-99999"  # misses still work


def test_get_is_case_insensitive_and_accepts_compact_forms() -> None:
    msg = _request([("Call-ID", "abc"), ("Via", "v1"), ("Via", "v2"), ("Content-Length", "0")])
    assert msg.get("call-id") == "abc"
    assert msg.get("i") == "abc"
    assert msg.get("v") == "v1"
    assert msg.get_all("VIA") == ["v1", "v2"]
    assert msg.get("Subject") is None
    assert msg.get_all("Subject") == []


def test_get_sees_headers_appended_later() -> None:
    msg = _request([])
    assert msg.get("Expires") is None
    msg.headers.append(("Expires", "0"))
    assert msg.get("expires") == "0"


def test_call_id_and_kind() -> None:
    assert _request([("Call-ID", "c1")]).call_id == "c1"
    assert _request([]).call_id == ""
    assert _request([]).is_request
    assert not SipMessage(status=200, reason="OK").is_request


def test_cseq_parses() -> None:
    assert _request([("CSeq", "314159 INFO")]).cseq == (314159, "INFO")
    assert _request([("CSeq", "1   ACK")]).cseq == (1, "ACK")


@pytest.mark.parametrize(
    "value", [None, "", "INFO", "x INFO", "-1 INFO", "1", "99999999999 INFO", "4294967296 INFO"]
)
def test_cseq_malformed_raises(value: str | None) -> None:
    msg = _request([] if value is None else [("CSeq", value)])
    with pytest.raises(BadRequest):
        _ = msg.cseq


def test_encode_request_computes_content_length() -> None:
    raw = encode_request(
        "INFO",
        "sip:pchat@example.com",
        [("Call-ID", "c1"), ("Content-Length", "999"), ("l", "5")],
        b"hello",
    )
    assert raw == (
        b"INFO sip:pchat@example.com SIP/2.0\r\nCall-ID: c1\r\nContent-Length: 5\r\n\r\nhello"
    )


def test_encode_response_without_body() -> None:
    raw = encode_response(200, "OK", [("CSeq", "1 INFO")])
    assert raw == b"SIP/2.0 200 OK\r\nCSeq: 1 INFO\r\nContent-Length: 0\r\n\r\n"
    assert encode_response(299, "Odd", []).startswith(b"SIP/2.0 299 Odd\r\n")


def test_encode_rejects_header_injection() -> None:
    with pytest.raises(ValueError):
        encode_response(200, "OK", [("Subject", "x\r\nVia: evil")])
    with pytest.raises(ValueError):
        encode_request("INFO", "sip:a@b", [("Subject", "x\nVia: evil")])
    with pytest.raises(ValueError):
        encode_response(299, "Odd\r\nVia: evil", [])
    with pytest.raises(ValueError):
        encode_request("INFO", "sip:a@b\nVia: evil", [])
    with pytest.raises(ValueError):
        encode_response(200, "OK", [("X-A\r\nVia", "evil")])


def test_encode_then_feed_round_trip() -> None:
    headers = [
        ("Via", "SIP/2.0/TCP 10.0.0.1:5061;branch=z9hG4bK1"),
        ("Via", "SIP/2.0/TCP 10.0.0.2:5061;branch=z9hG4bK2"),
        ("From", '"Ålice" <sip:alice@example.com>;tag=1'),
        ("To", "<sip:pchat@example.com>"),
        ("Call-ID", "c1@example.com"),
        ("CSeq", "7 INFO"),
        ("Content-Type", "text/plain"),
    ]
    body = "<xccos>é</xccos>".encode()
    msg = _parse(encode_request("INFO", "sip:pchat@example.com", headers, body))
    assert (msg.method, msg.uri, msg.status, msg.reason) == ("INFO", "sip:pchat@example.com", 0, "")
    assert msg.headers == [*headers, ("Content-Length", str(len(body)))]
    assert msg.body == body
    again = _parse(encode_message(msg))
    assert again.headers == msg.headers and again.body == body

    reply = _parse(encode_response(486, "Busy Here", headers[:1], b"x"))
    assert (reply.status, reply.reason, reply.method, reply.body) == (486, "Busy Here", "", b"x")
    assert not reply.is_request
    assert _parse(encode_message(reply)).status == 486


def _invite() -> SipMessage:
    return _request(
        [
            ("Via", "SIP/2.0/TCP a;branch=z9hG4bK1"),
            ("Max-Forwards", "70"),
            ("Via", "SIP/2.0/TCP b;branch=z9hG4bK2"),
            ("From", "<sip:alice@example.com>;tag=f1"),
            ("To", "<sip:pchat@example.com>"),
            ("Call-ID", "c1"),
            ("CSeq", "1 INVITE"),
            ("Contact", "<sip:alice@10.0.0.1>"),
            ("Via", "SIP/2.0/TCP c;branch=z9hG4bK3"),
        ]
    )


def test_response_to_copies_vias_in_order_and_adds_tag() -> None:
    raw = response_to(_invite(), 200, to_tag="srv1", extra=[("Contact", "<sip:pchat@h>")])
    reply = _parse(raw)
    assert (reply.status, reply.reason) == (200, "OK")
    assert reply.headers == [
        ("Via", "SIP/2.0/TCP a;branch=z9hG4bK1"),
        ("Via", "SIP/2.0/TCP b;branch=z9hG4bK2"),
        ("Via", "SIP/2.0/TCP c;branch=z9hG4bK3"),
        ("From", "<sip:alice@example.com>;tag=f1"),
        ("To", "<sip:pchat@example.com>;tag=srv1"),
        ("Call-ID", "c1"),
        ("CSeq", "1 INVITE"),
        ("Contact", "<sip:pchat@h>"),
        ("Content-Length", "0"),
    ]


def test_response_to_keeps_an_existing_to_tag() -> None:
    msg = _invite()
    msg.headers[4] = ("To", "<sip:pchat@example.com>;tag=old")
    reply = _parse(response_to(msg, 200, to_tag="new"))
    assert reply.get("To") == "<sip:pchat@example.com>;tag=old"
    no_tag = _parse(response_to(_invite(), 100))
    assert no_tag.get("To") == "<sip:pchat@example.com>"
    assert no_tag.reason == "Trying"


def test_response_to_reason_and_body() -> None:
    reply = _parse(response_to(_invite(), 503, extra=[("Retry-After", "5")], body=b"b"))
    assert reply.reason == REASONS[503] == "Service Unavailable"
    assert reply.get("Retry-After") == "5"
    assert reply.body == b"b"
    assert _parse(response_to(_invite(), 400, "Nope")).reason == "Nope"
    assert _parse(response_to(_invite(), 299)).reason == "Unknown"


def test_reasons_cover_the_brief() -> None:
    wanted = {100, 180, 200, 202, 400, 401, 403, 404, 405, 408, 413, 415, 420}
    wanted |= {481, 486, 487, 488, 500, 501, 503, 504}
    assert wanted <= REASONS.keys()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"Alice" <sip:a@d>;tag=x', ("Alice", "sip:a@d", {"tag": "x"})),
        ("Alice Smith <sip:a@d>", ("Alice Smith", "sip:a@d", {})),
        ("<sip:a@d;transport=tcp>;TAG=x;lr", ("", "sip:a@d;transport=tcp", {"tag": "x", "lr": ""})),
        ("sip:a@d;tag=x", ("", "sip:a@d", {"tag": "x"})),
        ("  sip:a@d  ", ("", "sip:a@d", {})),
        (r'"A \"B\" <C>" <sip:a@d>;tag="q"', ('A "B" <C>', "sip:a@d", {"tag": "q"})),
        ('"" <sip:a@d>', ("", "sip:a@d", {})),
        (r'<sip:a@d>;x="a\"b;c";y=1', ("", "sip:a@d", {"x": 'a"b;c', "y": "1"})),
    ],
)
def test_parse_name_addr(value: str, expected: tuple[str, str, dict[str, str]]) -> None:
    assert parse_name_addr(value) == expected


@pytest.mark.parametrize("value", ['"Alice <sip:a@d>', "<sip:a@d", "<sip:a@d> junk", '"A" sip:a@d'])
def test_parse_name_addr_malformed(value: str) -> None:
    with pytest.raises(BadRequest):
        parse_name_addr(value)


def test_tag_of() -> None:
    assert tag_of("<sip:a@d>;tag=abc") == "abc"
    assert tag_of("sip:a@d;Tag=abc") == "abc"
    assert tag_of("<sip:a@d>") == ""
    assert tag_of("<sip:tag@d;tag=uri-param>") == ""  # a URI parameter is not the tag
    assert tag_of("<sip:a@d;tag=x") == ""  # malformed


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:alice@example.com;transport=tcp", "alice@example.com"),
        ("sip:alice@example.com", "alice@example.com"),
        ("SIPS:alice@example.com?subject=x", "alice@example.com"),
        ("<sip:alice@example.com;gr>", "alice@example.com"),
        ("alice@example.com", "alice@example.com"),
        ("sip:alice@example.com:5061", "alice@example.com:5061"),
    ],
)
def test_address_of(uri: str, expected: str) -> None:
    assert address_of(uri) == expected
