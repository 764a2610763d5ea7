"""cmd:bccontext's query and its reply (XCCOS.md §4): what the client asks for, and the
page of messages that fits the reply budget."""

from __future__ import annotations

from core.errors import BadRequest
from core.rooms.events import HistoryQuery
from core.store.base import MessageRecord
from core.xccos import build
from core.xccos.ids import ts_iso
from core.xccos.xml import Element

MAX_MSGID = 2**63 - 1  # msgids are signed 64-bit integers in both stores
DEFAULT_COUNT = 25  # a bccontext without a query: the last 25, as the original's clients ask
# Bytes of a reply around its messages (the chanib and the rpl): kept out of the budget.
ENVELOPE_BYTES = 1024


def history_query(data: Element | None, history_max: int) -> HistoryQuery:
    """The query of a bccontext's ``<bcq>``; 400 for an unknown kind, a count outside
    1..``history_max`` or a search without text."""
    bcq = data.find("bcq") if data is not None else None
    if bcq is None or not bcq.children:
        return HistoryQuery("last", DEFAULT_COUNT)
    q = bcq.children[0]
    if q.tag not in ("last", "before", "after", "search"):
        raise BadRequest(f"unknown history query {q.tag}")
    count = number(q.get("cnt", str(DEFAULT_COUNT)), "cnt")
    seq = number(q.get("msgid", "0") or "0", "msgid")
    if not 1 <= count <= history_max:
        raise BadRequest(f"cnt must be 1..{history_max}")
    if q.tag == "search" and not q.get("text").strip():
        raise BadRequest("search needs text")
    return HistoryQuery(q.tag, count, seq, q.get("text"))  # type: ignore[arg-type]


def history_page(
    uri: str, messages: list[MessageRecord], budget_bytes: int, *, newest_first: bool
) -> tuple[str, bool]:
    """The messages that fit the reply budget, oldest first, and whether some were
    left out: "last"/"before" keep the newest (the client pages back with before),
    "after" the oldest (a catch-up goes on with after)."""
    budget = budget_bytes - ENVELOPE_BYTES
    order = reversed(messages) if newest_first else iter(messages)
    parts: list[str] = []
    for m in order:
        part = build.msg(uri, m.author, ts_iso(m.ts_ms), m.seq, m.text)
        budget -= len(part.encode())
        if budget < 0:
            break
        parts.append(part)
    if newest_first:
        parts.reverse()
    return "".join(parts), len(parts) < len(messages)


def number(value: str, name: str) -> int:
    """A decimal msgid or count from the client: ASCII digits ("²".isdigit() is True),
    within the stores' 64-bit range, else 400."""
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > MAX_MSGID:
        raise BadRequest(f"{name} must be a decimal integer below 2^63")
    return int(value)
