"""Unit tests for core/sip/codec.py: stream framing, pings, limits and bad input."""

from __future__ import annotations

import pytest

from core.errors import FramingLost
from core.sip.codec import PING, BadMessage, Ping, SipCodec
from core.sip.message import SipMessage, encode_request, response_to

BODY = b'<xccos ver="1" envid="17" xmlns="urn:parlano:xml:ns:xccos"><cmd id="cmd:requri"/></xccos>'


def sample_info(body: bytes = BODY, call_id: str = "c1@example.com", cseq: int = 2) -> bytes:
    return encode_request(
        "INFO",
        "sip:pchat@example.com",
        [
            ("Via", "SIP/2.0/TCP 10.0.0.1:5061;branch=z9hG4bK776"),
            ("Max-Forwards", "70"),
            ("From", '"Alice" <sip:alice@example.com>;tag=1928'),
            ("To", "<sip:pchat@example.com>;tag=a6c8"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} INFO"),
            ("Content-Type", "text/plain"),
        ],
        body,
    )


def head(start: str, *lines: str) -> bytes:
    return ("\r\n".join((start, *lines)) + "\r\n\r\n").encode()


def only_message(items: list[SipMessage | BadMessage | Ping]) -> SipMessage:
    [msg] = items
    assert isinstance(msg, SipMessage)
    return msg


def only_bad(items: list[SipMessage | BadMessage | Ping]) -> BadMessage:
    [bad] = items
    assert isinstance(bad, BadMessage)
    return bad


def test_parses_a_whole_info() -> None:
    msg = only_message(SipCodec().feed(sample_info()))
    assert (msg.method, msg.uri) == ("INFO", "sip:pchat@example.com")
    assert msg.call_id == "c1@example.com"
    assert msg.cseq == (2, "INFO")
    assert msg.get("from") == '"Alice" <sip:alice@example.com>;tag=1928'
    assert msg.get("content-length") == str(len(BODY))
    assert msg.body == BODY


def test_split_at_every_byte_offset() -> None:
    raw = sample_info()
    for cut in range(1, len(raw)):
        codec = SipCodec()
        first = codec.feed(raw[:cut])
        assert first == [], cut
        msg = only_message(codec.feed(raw[cut:]))
        assert msg.body == BODY and msg.call_id == "c1@example.com", cut
        assert codec.buffered == 0


def test_fed_one_byte_at_a_time() -> None:
    raw = sample_info() * 2
    codec = SipCodec()
    items = [item for i in range(len(raw)) for item in codec.feed(raw[i : i + 1])]
    assert [type(i) for i in items] == [SipMessage, SipMessage]


def test_several_messages_in_one_read() -> None:
    raw = sample_info(call_id="a") + sample_info(body=b"", call_id="b") + sample_info(call_id="c")
    items = SipCodec().feed(raw)
    assert [m.call_id for m in items if isinstance(m, SipMessage)] == ["a", "b", "c"]
    assert len(items) == 3
    assert [m.body for m in items if isinstance(m, SipMessage)] == [BODY, b"", BODY]


def test_message_and_a_half_then_rest() -> None:
    raw = sample_info(call_id="a") + sample_info(call_id="b")
    codec = SipCodec()
    cut = len(raw) - 30
    assert [m.call_id for m in codec.feed(raw[:cut]) if isinstance(m, SipMessage)] == ["a"]
    assert only_message(codec.feed(raw[cut:])).call_id == "b"


def test_ping_before_and_between_messages() -> None:
    raw = b"\r\n\r\n" + sample_info(call_id="a") + b"\r\n\r\n\r\n\r\n" + sample_info(call_id="b")
    items = SipCodec().feed(raw)
    assert items[0] is PING and items[2] is PING and items[3] is PING
    assert [type(i) for i in items] == [Ping, SipMessage, Ping, Ping, SipMessage]


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_split_ping(cut: int) -> None:
    codec = SipCodec()
    assert codec.feed(b"\r\n\r\n"[:cut]) == []
    assert codec.feed(b"\r\n\r\n"[cut:]) == [PING]


def test_stray_crlf_is_ignored() -> None:
    codec = SipCodec()
    assert codec.feed(b"\r\n") == []
    msg = only_message(codec.feed(sample_info()))
    assert msg.method == "INFO"
    assert only_message(codec.feed(b"\r\n" + sample_info())).method == "INFO"


def test_compact_headers_expand() -> None:
    raw = head(
        "INFO sip:pchat@example.com SIP/2.0",
        "v: SIP/2.0/TCP h;branch=z9hG4bK1",
        "f: <sip:alice@example.com>;tag=1",
        "t: <sip:pchat@example.com>",
        "i: compact@id",
        "CSEQ: 3 INFO",
        "c: text/plain",
        "k: timer",
        "x: 600",
        "o: vnd-microsoft-provisioning-v2",
        "m: <sip:alice@h>",
        "s: hi",
        "l: 0",
    )
    msg = only_message(SipCodec().feed(raw))
    assert [name for name, _ in msg.headers] == [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Content-Type",
        "Supported",
        "Session-Expires",
        "Event",
        "Contact",
        "Subject",
        "Content-Length",
    ]
    assert msg.call_id == "compact@id"
    assert msg.get("Session-Expires") == "600"


def test_folded_headers_join_and_values_are_stripped() -> None:
    raw = head(
        "INFO sip:pchat@example.com SIP/2.0",
        "Subject:   first part  ",
        "  second part",
        "\tthird part",
        "Call-ID : spaced",
        "Content-Length: 0",
    )
    msg = only_message(SipCodec().feed(raw))
    assert msg.get("Subject") == "first part second part third part"
    assert msg.call_id == "spaced"


def test_parses_responses() -> None:
    raw = response_to(only_message(SipCodec().feed(sample_info())), 200)
    msg = only_message(SipCodec().feed(raw))
    assert (msg.status, msg.reason, msg.is_request) == (200, "OK", False)
    reply = only_message(SipCodec().feed(head("SIP/2.0 503 Service Unavailable", "l: 0")))
    assert (reply.status, reply.reason) == (503, "Service Unavailable")


def test_too_large_body_is_skipped_and_next_message_parses() -> None:
    big = sample_info(body=b"x" * 200, call_id="big")
    codec = SipCodec(max_body_bytes=100)
    items = codec.feed(big + sample_info(body=b"ok", call_id="next"))
    bad = items[0]
    assert isinstance(bad, BadMessage) and bad.status == 413
    assert bad.message is not None and bad.message.call_id == "big"
    assert only_message(items[1:]).body == b"ok"
    assert codec.buffered == 0


@pytest.mark.parametrize("chunk", [1, 7, 64, 150])
def test_too_large_body_arriving_in_pieces_is_discarded(chunk: int) -> None:
    big = sample_info(body=b"x" * 200, call_id="big")
    raw = big + sample_info(body=b"ok", call_id="next")
    codec = SipCodec(max_body_bytes=100)
    items = []
    for i in range(0, len(raw), chunk):
        items += codec.feed(raw[i : i + chunk])
        assert codec.buffered <= len(big) - 200  # the big body is never held
    assert isinstance(items[0], BadMessage) and items[0].status == 413
    assert only_message(items[1:]).call_id == "next"


def test_too_large_head_alone_then_body_later() -> None:
    big = sample_info(body=b"y" * 500)
    cut = big.index(b"\r\n\r\n") + 4
    codec = SipCodec(max_body_bytes=100)
    assert only_bad(codec.feed(big[:cut])).status == 413
    assert codec.feed(big[cut:]) == []
    assert only_message(codec.feed(sample_info())).body == BODY


@pytest.mark.parametrize(
    "start",
    [
        "HELLO",
        "INFO sip:a@b",
        "INFO sip:a@b SIP/3.0",
        "INFO  sip:a@b SIP/2.0",
        "IN(FO sip:a SIP/2.0",
        "SIP/2.0 2x0 OK",
        "SIP/2.0 2000 OK",
        "SIP/2.0 099 Low",
    ],
)
def test_bad_start_line_gives_400_and_stream_continues(start: str) -> None:
    codec = SipCodec()
    bad = only_bad(codec.feed(head(start, "Call-ID: x", "Content-Length: 3") + b"abc"))
    assert bad.status == 400
    if start.startswith("SIP/"):  # a broken response: nobody to answer
        assert bad.message is None
    else:  # the headers are kept so that the 400 can be addressed to the sender
        assert bad.message is not None
        assert bad.message.call_id == "x" and bad.message.is_request
    assert only_message(codec.feed(sample_info())).body == BODY


def test_header_without_colon_gives_400_with_the_parsed_message() -> None:
    raw = head(
        "INFO sip:pchat@example.com SIP/2.0",
        "Via: SIP/2.0/TCP h;branch=z9hG4bK1",
        "this line has no colon",
        "Call-ID: c9",
        "CSeq: 4 INFO",
        "Content-Length: 2",
    )
    codec = SipCodec()
    items = codec.feed(raw + b"hi" + sample_info())
    bad = items[0]
    assert isinstance(bad, BadMessage) and bad.status == 400
    assert "colon" in bad.reason
    assert bad.message is not None
    assert bad.message.call_id == "c9" and bad.message.get("Via") == "SIP/2.0/TCP h;branch=z9hG4bK1"
    assert bad.message.body == b"hi"
    assert only_message(items[1:]).body == BODY


@pytest.mark.parametrize(
    "lines",
    [
        ("Bad Name: x",),
        (" folded before any header",),
        ("Subject: a\nVia: injected",),
        ("Subject: a\rVia: injected",),
    ],
)
def test_other_malformed_headers_give_400(lines: tuple[str, ...]) -> None:
    raw = head("INFO sip:pchat@example.com SIP/2.0", *lines, "Content-Length: 0")
    bad = only_bad(SipCodec().feed(raw))
    assert bad.status == 400 and bad.message is not None
    assert all("\n" not in v and "\r" not in v for _, v in bad.message.headers)


def test_bad_header_name_stays_bad_after_a_lookup_by_that_name() -> None:
    # get() canonicalises any spelling; that must not teach the parser to accept it.
    assert SipMessage().get("Bad Name") is None
    raw = head("INFO sip:pchat@example.com SIP/2.0", "Bad Name: x", "Content-Length: 0")
    assert only_bad(SipCodec().feed(raw)).status == 400


def test_invalid_utf8_gives_400() -> None:
    raw = head("INFO sip:pchat@example.com SIP/2.0", "Call-ID: c1", "Content-Length: 0")
    bad = only_bad(SipCodec().feed(raw.replace(b"c1", b"c\xff")))
    assert bad.status == 400 and "UTF-8" in bad.reason


@pytest.mark.parametrize(
    "length_lines",
    [
        (),
        ("Content-Length: -1",),
        ("Content-Length: ten",),
        ("Content-Length: 1.5",),
        ("Content-Length: \u0661",),
        ("Content-Length: " + "9" * 5000,),
        ("Content-Length: 1", "Content-Length: 2"),
    ],
)
def test_unusable_content_length_loses_framing(length_lines: tuple[str, ...]) -> None:
    raw = head("INFO sip:pchat@example.com SIP/2.0", "Call-ID: x", *length_lines)
    with pytest.raises(FramingLost):
        SipCodec().feed(raw)


def test_missing_content_length_loses_framing_even_with_a_bad_start_line() -> None:
    with pytest.raises(FramingLost):
        SipCodec().feed(head("garbage", "Call-ID: x"))


def test_repeated_equal_content_length_is_fine() -> None:
    raw = head("INFO sip:a@b SIP/2.0", "Content-Length: 2", "l: 2") + b"ok"
    assert only_message(SipCodec().feed(raw)).body == b"ok"


def test_over_long_header_block_loses_framing() -> None:
    codec = SipCodec(max_header_bytes=1024)
    codec.feed(b"INFO sip:a@b SIP/2.0\r\n")
    with pytest.raises(FramingLost):
        for _ in range(100):
            codec.feed(b"Subject: " + b"z" * 40 + b"\r\n")


def test_terminated_header_block_over_the_limit_loses_framing() -> None:
    raw = head("INFO sip:a@b SIP/2.0", "Subject: " + "z" * 2000, "Content-Length: 0")
    with pytest.raises(FramingLost):
        SipCodec(max_header_bytes=1024).feed(raw)


def test_header_block_at_exactly_the_limit_parses() -> None:
    raw = sample_info(body=b"")
    assert only_message(SipCodec(max_header_bytes=len(raw)).feed(raw)).body == b""
    with pytest.raises(FramingLost):
        SipCodec(max_header_bytes=len(raw) - 1).feed(raw)
    codec = SipCodec(max_header_bytes=len(raw))
    assert codec.feed(raw[:-1]) == []  # one byte short of the end: still waiting
    assert only_message(codec.feed(raw[-1:])).method == "INFO"


def test_body_at_exactly_the_limit_is_accepted() -> None:
    msg = only_message(SipCodec(max_body_bytes=len(BODY)).feed(sample_info()))
    assert msg.body == BODY
    bad = only_bad(SipCodec(max_body_bytes=len(BODY) - 1).feed(sample_info()))
    assert bad.status == 413


def test_encode_helper_round_trips() -> None:
    msg = only_message(SipCodec().feed(sample_info()))
    assert SipCodec.encode(msg) == sample_info()


def _ok(cseq: int, body: bytes = b"", length_header: str = "Content-Length") -> bytes:
    return (
        f"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK{cseq}\r\nCall-ID: c\r\n"
        f"CSeq: {cseq} INFO\r\n{length_header}: {len(body)}\r\n\r\n"
    ).encode() + body


def test_2xx_responses_can_be_dropped_unparsed_at_any_split() -> None:
    stream = _ok(1) + _ok(2, b"body!", "l") + sample_info() + _ok(3) + _ok(4, b"x" * 50)
    stream += b"SIP/2.0 481 Call/Transaction Does Not Exist\r\nCall-ID: c\r\nCSeq: 5 INFO\r\n"
    stream += b"Content-Length: 0\r\n\r\n"
    for split in range(len(stream)):
        codec = SipCodec(drop_2xx_responses=True)
        items = codec.feed(stream[:split]) + codec.feed(stream[split:])
        assert [i.method or i.status for i in items if isinstance(i, SipMessage)] == ["INFO", 481]
        assert codec.dropped_2xx == 4
        assert codec.buffered == 0


def test_2xx_responses_are_kept_unless_asked() -> None:
    items = SipCodec().feed(_ok(1))
    assert [i.status for i in items if isinstance(i, SipMessage)] == [200]


def test_a_dropped_2xx_with_conflicting_lengths_loses_framing_as_when_parsed() -> None:
    # The fast path reads the first length only; a second one, unequal, must not let it
    # frame a stream the full parser would refuse.
    ok = b"SIP/2.0 200 OK\r\nCall-ID: c\r\nContent-Length: 0\r\nl: 5\r\n\r\nhello"
    for drop in (False, True):
        with pytest.raises(FramingLost):
            SipCodec(drop_2xx_responses=drop).feed(ok)


def test_a_2xx_with_equal_repeated_lengths_keeps_the_stream_in_sync() -> None:
    codec = SipCodec(drop_2xx_responses=True)
    ok = _ok(1, b"abc").replace(b"Content-Length: 3", b"Content-Length: 3\r\nl: 3")
    items = codec.feed(ok + sample_info())
    assert [i.method for i in items if isinstance(i, SipMessage) and i.is_request] == ["INFO"]
    assert codec.buffered == 0
