"""Protocol layer: XCCOS identifiers (room and category URIs) and timestamps."""

from __future__ import annotations

import calendar
import re
import time
from datetime import datetime

from core.errors import BadRequest
from core.xccos.xml import Element

ROOM_SCHEME = "ma-chan://"
CATEGORY_SCHEME = "ma-cat://"

_TS = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:Z|\+00:00)"  # OCS sends 7 fraction digits; we keep milliseconds
)
_ROOM_PARTS = re.compile(r"([^/\s]+)/([^/\s]+)")


def room_uri(domain: str, room_id: str) -> str:
    """`ma-chan://<domain>/<room_id>`."""
    return f"{ROOM_SCHEME}{domain}/{room_id}"


def category_uri(domain: str, category_id: str) -> str:
    """`ma-cat://<domain>/<category_id>`."""
    return f"{CATEGORY_SCHEME}{domain}/{category_id}"


def parse_room_uri(uri: str) -> tuple[str, str]:
    """(domain, room_id) of a `ma-chan://D/ID` URI; neither part may be empty or hold `/`."""
    if not uri.startswith(ROOM_SCHEME):
        raise BadRequest(f"not a room URI: {uri[:80]!r}")
    m = _ROOM_PARTS.fullmatch(uri, len(ROOM_SCHEME))
    if m is None:
        raise BadRequest(f"malformed room URI: {uri[:80]!r}")
    return m.group(1), m.group(2)


def room_refs(data: Element | None) -> list[str]:
    """Room URIs named by the direct `chanib`/`chanid` children of a command's data, in order."""
    if data is None:
        return []
    uris: list[str] = []
    for child in data.children:
        if child.tag == "chanib":
            uri = child.get("uri")
            if not uri:
                raise BadRequest("chanib without uri")
            uris.append(uri)
        elif child.tag == "chanid":
            domain, value = child.get("domain"), child.get("value")
            if not domain or not value:
                raise BadRequest("chanid without domain or value")
            uris.append(f"{ROOM_SCHEME}{domain}/{value}")
    return uris


# Posts in the same second share the date prefix: gmtime plus formatting is
# most of ts_iso's cost, and a busy room stamps many posts per second.
_last_second: tuple[int, str] = (-(2**62), "")


def ts_iso(ms: int) -> str:
    """UTC ISO 8601 with milliseconds, e.g. `2026-11-25T10:00:00.123Z`."""
    global _last_second
    seconds, millis = divmod(ms, 1000)
    cached_second, prefix = _last_second
    if seconds != cached_second:
        t = time.gmtime(seconds)
        prefix = (
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
            f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        )
        _last_second = (seconds, prefix)
    return f"{prefix}.{millis:03d}Z"


def parse_ts(value: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 UTC timestamp (inverse of ts_iso)."""
    m = _TS.fullmatch(value)
    if m is None:
        raise BadRequest(f"malformed timestamp: {value[:40]!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        # datetime validates the calendar (Feb 30, hour 24, leap second 60).
        datetime(year, month, day, hour, minute, second)
    except ValueError:
        raise BadRequest(f"invalid timestamp: {value[:40]!r}") from None
    fraction = m.group(7) or ""
    millis = int((fraction + "000")[:3])
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) * 1000 + millis
