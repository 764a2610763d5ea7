"""cmd:bccontext's query and reply page (core/xccos/history.py), from XML alone."""

from __future__ import annotations

import pytest

from core.errors import BadRequest
from core.rooms.events import HistoryQuery
from core.store.base import MessageRecord
from core.xccos.history import ENVELOPE_BYTES, history_page, history_query, number
from core.xccos.xml import Element, parse_xml

URI = "ma-chan://example.com/r1"


def _data(inner: str) -> Element:
    return parse_xml(f"<data>{inner}</data>")


def _messages(n: int, text: str = "x" * 100) -> list[MessageRecord]:
    return [
        MessageRecord(room_id="r1", seq=i, author="sip:a@example.com", ts_ms=i, text=text)
        for i in range(1, n + 1)
    ]


def test_a_query_defaults_to_the_last_25_and_reads_each_kind() -> None:
    assert history_query(None, 500) == HistoryQuery("last", 25)
    assert history_query(_data("<bcq><before msgid='9' cnt='3'/></bcq>"), 500) == HistoryQuery(
        "before", 3, 9, ""
    )
    search = history_query(_data("<bcq><search text='hi' cnt='2'/></bcq>"), 500)
    assert (search.kind, search.count, search.text) == ("search", 2, "hi")


@pytest.mark.parametrize(
    "inner",
    [
        "<bcq><drop cnt='1'/></bcq>",  # unknown kind
        "<bcq><last cnt='0'/></bcq>",  # below 1
        "<bcq><last cnt='501'/></bcq>",  # over the server's history_max
        "<bcq><last cnt='²'/></bcq>",  # a digit to str.isdigit, not a decimal
        "<bcq><after msgid='9223372036854775808' cnt='1'/></bcq>",  # 2^63: past the stores
        "<bcq><search text='  ' cnt='1'/></bcq>",  # a search needs text
    ],
)
def test_a_bad_query_is_a_400(inner: str) -> None:
    with pytest.raises(BadRequest):
        history_query(_data(inner), 500)


def test_a_page_keeps_what_fits_the_budget_newest_for_last_oldest_for_after() -> None:
    messages = _messages(10)
    whole, more = history_page(URI, messages, 1 << 20, newest_first=True)
    assert not more and whole.count("<msg ") == 10
    one = len(history_page(URI, messages[:1], 1 << 20, newest_first=True)[0].encode())
    budget = ENVELOPE_BYTES + 3 * one + one // 2  # room for three and a half
    newest, more = history_page(URI, messages, budget, newest_first=True)
    assert more and [f'msgid="{s}"' in newest for s in (8, 9, 10)] == [True] * 3
    assert newest.index('msgid="8"') < newest.index('msgid="10"')  # oldest first
    oldest, more = history_page(URI, messages, budget, newest_first=False)
    assert more and 'msgid="1"' in oldest and 'msgid="3"' in oldest and 'msgid="4"' not in oldest


def test_numbers_are_ascii_decimals_below_2_63() -> None:
    assert number("9223372036854775807", "msgid") == 2**63 - 1
    with pytest.raises(BadRequest):
        number("-1", "cnt")
