"""core/browser/translate.py: browser requests as XCCOS items, server envelopes as JSON."""

from __future__ import annotations

import msgspec

from core.browser import messages as m
from core.browser.translate import Encoder, to_envelope
from core.xccos import build
from core.xccos.envelope import Command, Post

ROOM = "ma-chan://example.com/lobby"


def _decode(raw: str) -> m.ClientMessage:
    return msgspec.json.decode(raw, type=m.ClientMessage)  # type: ignore[arg-type]


def test_a_post_is_a_grpchat_whose_envid_is_its_key_and_seqid_its_id() -> None:
    req = _decode(f'{{"type":"post","id":9,"room":"{ROOM}","text":"a\\nb","key":"k-1"}}')
    envelope = to_envelope(req)
    assert envelope.envid == "k-1"
    [item] = envelope.items
    assert isinstance(item, Post) and (item.seqid, item.text, item.chan_uri) == ("9", "a\nb", ROOM)


def test_history_before_after_and_search_are_bccontext_queries() -> None:
    for extra, tag, attrs in (
        ("", "last", {"cnt": "50"}),
        (',"before":40', "before", {"msgid": "40", "cnt": "50"}),
        (',"after":0', "after", {"msgid": "0", "cnt": "50"}),
    ):
        [item] = to_envelope(_decode(f'{{"type":"history","id":1,"room":"{ROOM}"{extra}}}')).items
        assert isinstance(item, Command) and item.name == "cmd:bccontext" and item.data
        query = item.data.children[1].children[0]
        assert (query.tag, query.attrs) == (tag, attrs)


def test_unknown_fields_and_types_are_refused() -> None:
    for raw in (
        '{"type":"join","id":1,"room":"r","x":1}',
        '{"type":"nope","id":1}',
        '{"type":"ping","id":0}',
        '{"type":"history","id":1,"room":"r","count":501}',
    ):
        try:
            _decode(raw)
        except msgspec.ValidationError:
            continue
        raise AssertionError(f"accepted {raw}")


def test_a_fanout_envelope_is_translated_once_for_every_browser() -> None:
    encoder = Encoder(64 * 1024)
    body = build.envelope(
        3, build.grpchat(ROOM, "sip:bob@example.com", "2026-12-03T10:00:00.000Z", 7, "hi")
    )
    first = encoder.encode(body)
    assert encoder.encode(body) is first  # the same bytes object: the same JSON, not redone
    assert msgspec.json.decode(first[0]) == {
        "type": "message",
        "message": {
            "room": ROOM,
            "msgid": 7,
            "author": "sip:bob@example.com",
            "ts": "2026-12-03T10:00:00.000Z",
            "text": "hi",
        },
    }
    copy = bytes(bytearray(body))
    assert encoder.encode(copy) is not first and encoder.encode(copy) == first


def test_an_error_reply_carries_its_code_and_reason() -> None:
    body = build.envelope(1, build.rpl("rpl:join", 4, "4", "w4", 404, "no such room"))
    [raw] = Encoder(64 * 1024).encode(body)
    assert msgspec.json.decode(raw) == {
        "type": "error",
        "id": 4,
        "code": 404,
        "reason": "no such room",
    }
