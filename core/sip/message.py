"""SIP message model and encoders (protocol layer, no I/O): RFC 3261 §7 and §20."""

from __future__ import annotations

import re
from collections.abc import Iterable

from core.errors import BadRequest

# Header names whose canonical spelling is not plain title-case, plus the common ones, so the
# cache below starts warm. Keys are lower-case.
_KNOWN_NAMES = (
    "Call-ID",
    "CSeq",
    "Via",
    "From",
    "To",
    "Content-Length",
    "Content-Type",
    "Contact",
    "WWW-Authenticate",
    "Authorization",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Max-Forwards",
    "Expires",
    "Event",
    "Session-Expires",
    "Retry-After",
    "Warning",
    "Allow",
    "Supported",
    "Require",
    "User-Agent",
    "Server",
    "P-Asserted-Identity",
    "Min-SE",
    "Accept",
    "Route",
    "Record-Route",
    "Subject",
    "Content-Encoding",
    "Refer-To",
    "Referred-By",
    "Allow-Events",
    "Authentication-Info",
    "MIME-Version",
    "RSeq",
    "RAck",
    "SIP-ETag",
    "SIP-If-Match",
)

# RFC 3261 §7.3.3 compact forms, plus the later ones (RFC 3515, 3892, 3265, 3841, 4474).
_COMPACT = {
    "i": "Call-ID",
    "f": "From",
    "t": "To",
    "v": "Via",
    "l": "Content-Length",
    "c": "Content-Type",
    "m": "Contact",
    "k": "Supported",
    "s": "Subject",
    "o": "Event",
    "x": "Session-Expires",
    "e": "Content-Encoding",
    "r": "Refer-To",
    "b": "Referred-By",
    "u": "Allow-Events",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
    "n": "Identity-Info",
}

_CANON_LOWER: dict[str, str] = {n.lower(): n for n in _KNOWN_NAMES}
_CANON_LOWER.update(_COMPACT)

# Spelling as seen on the wire -> canonical name. Peers pick the names, so the cache is capped:
# 2048 spellings is far beyond any real mix of clients, and a miss only costs a title-case.
_CANON_CACHE: dict[str, str] = {}
_CANON_CACHE_MAX = 2048
for _lower, _canon in _CANON_LOWER.items():
    _CANON_CACHE[_lower] = _canon
    _CANON_CACHE[_canon] = _canon
    _CANON_CACHE[_lower.upper()] = _canon

_TOKEN = re.compile(r"[!%'*+\-.0-9A-Z^_`a-z|~]+")

REASONS: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    409: "Conflict",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    420: "Bad Extension",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    603: "Decline",
}

# Status lines are built once: every reply on the hot path starts with one of these.
_STATUS_LINES: dict[tuple[int, str], str] = {
    (code, phrase): f"SIP/2.0 {code} {phrase}\r\n" for code, phrase in REASONS.items()
}

# Copied into every response after the Vias, in this order (RFC 3261 §8.2.6.2).
_COPIED = ("From", "To", "Call-ID", "CSeq")

_URI_SCHEMES = ("sip:", "sips:", "tel:", "pres:", "im:")


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name; compact forms are expanded."""
    canon = _CANON_CACHE.get(name)
    if canon is not None:
        return canon
    lower = name.lower()
    canon = _CANON_LOWER.get(lower)
    if canon is None:
        canon = "-".join(part.capitalize() for part in lower.split("-"))
    if len(_CANON_CACHE) < _CANON_CACHE_MAX and is_token(name):
        _CANON_CACHE[name] = canon
    return canon


# Fast path for parsers: canonical name of an already-seen valid spelling, else None.
known_header_name = _CANON_CACHE.get


def header_name(name: str) -> str | None:
    """Canonical name of a header name read off the wire, or None if it is not a token."""
    canon = _CANON_CACHE.get(name)
    if canon is not None:
        return canon  # only valid tokens are ever cached
    if not is_token(name):
        return None
    return canonical_name(name)


def is_token(text: str) -> bool:
    """True when text is an RFC 3261 §25.1 token (method and header names)."""
    return _TOKEN.fullmatch(text) is not None


class SipMessage:
    """One SIP request or response. Invariant: header names are canonical, values stripped."""

    __slots__ = ("method", "uri", "status", "reason", "headers", "body")

    def __init__(
        self,
        *,
        method: str = "",
        uri: str = "",
        status: int = 0,
        reason: str = "",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        self.method = method
        self.uri = uri
        self.status = status
        self.reason = reason
        self.headers: list[tuple[str, str]] = headers if headers is not None else []
        self.body = body

    def __repr__(self) -> str:
        start = f"{self.method} {self.uri}" if self.is_request else f"{self.status} {self.reason}"
        return f"<SipMessage {start} headers={len(self.headers)} body={len(self.body)}B>"

    # A linear scan over the (name, value) list: with the ~10 headers of a chat INFO it costs
    # ~0.2 us a lookup, less than building a dict index for the 4-6 lookups a message gets.
    def get(self, name: str) -> str | None:
        """The first value of a header (any spelling, compact forms too), or None."""
        canon = canonical_name(name)
        for key, value in self.headers:
            if key == canon:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, in wire order."""
        canon = canonical_name(name)
        return [value for key, value in self.headers if key == canon]

    @property
    def is_request(self) -> bool:
        return self.status == 0

    @property
    def call_id(self) -> str:
        return self.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """(sequence number, method) from CSeq; BadRequest if missing or malformed."""
        value = self.get("CSeq")
        if value is None:
            raise BadRequest("missing CSeq")
        number, _, method = value.partition(" ")
        method = method.strip()
        # RFC 3261 §8.1.1.5: the number is a 32-bit unsigned integer.
        if not (number.isascii() and number.isdigit() and len(number) <= 10) or not method:
            raise BadRequest("malformed CSeq")
        seq = int(number)
        if seq >= 1 << 32 or not is_token(method):
            raise BadRequest("malformed CSeq")
        return seq, method


def _encode(start: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    parts = [start]
    for name, value in headers:
        if canonical_name(name) == "Content-Length":
            continue  # always recomputed below
        parts.append(f"{name}: {value}\r\n")
    parts.append(f"Content-Length: {len(body)}\r\n\r\n")
    text = "".join(parts)
    # Every part ends in exactly one CRLF (the last in two); any other CR or LF came from a
    # name, value, URI or reason and would smuggle extra lines into the message.
    lines = len(parts) + 1
    if text.count("\n") != lines or text.count("\r") != lines:
        raise ValueError("line break inside a start line or header")
    return text.encode() + body


def encode_request(
    method: str, uri: str, headers: Iterable[tuple[str, str]], body: bytes = b""
) -> bytes:
    """A request on the wire; Content-Length is always computed (any given one is dropped).

    ValueError if a CR or LF appears inside the start line or a header.
    """
    return _encode(f"{method} {uri} SIP/2.0\r\n", headers, body)


def encode_response(
    status: int, reason: str, headers: Iterable[tuple[str, str]], body: bytes = b""
) -> bytes:
    """A response on the wire; Content-Length is always computed (any given one is dropped).

    ValueError if a CR or LF appears inside the status line or a header.
    """
    line = _STATUS_LINES.get((status, reason))
    if line is None:
        line = f"SIP/2.0 {status} {reason}\r\n"
    return _encode(line, headers, body)


def encode_message(msg: SipMessage) -> bytes:
    """Encode a SipMessage (request or response) with its own headers and body."""
    if msg.is_request:
        return encode_request(msg.method, msg.uri, msg.headers, msg.body)
    return encode_response(msg.status, msg.reason, msg.headers, msg.body)


def response_to(
    request: SipMessage,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> bytes:
    """A response copying Via (all, in order), From, To, Call-ID and CSeq (RFC 3261 §8.2.6.2)."""
    vias: list[tuple[str, str]] = []
    copied: dict[str, str] = {}
    for name, value in request.headers:
        if name == "Via":
            vias.append((name, value))
        elif name in _COPIED and name not in copied:
            copied[name] = value
    headers = vias  # the Vias come first, then the rest in _COPIED order
    for name in _COPIED:
        found = copied.get(name)
        if found is None:
            continue
        if name == "To" and to_tag and not tag_of(found):
            found = f"{found};tag={to_tag}"
        headers.append((name, found))
    headers.extend(extra)
    if reason is None:
        reason = REASONS.get(status, "Unknown")
    return encode_response(status, reason, headers, body)


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
# One ;name[=value] parameter; a quoted value may hold ';' (RFC 3261 §25.1 generic-param).
_PARAM = re.compile(r'([^=;\s]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;]*))?', re.DOTALL)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return _ESCAPE.sub(r"\1", text[1:-1])
    return text


def _params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for found in _PARAM.finditer(text):
        value = found.group(2) or ""
        params.setdefault(found.group(1).lower(), _unquote(value.strip()))
    return params


def parse_name_addr(value: str) -> tuple[str, str, dict[str, str]]:
    """(display name, URI, header params) of a From/To/Contact value; BadRequest if malformed.

    Accepts ``"Alice" <sip:a@d>;tag=x``, ``Alice <sip:a@d>``, and a bare ``sip:a@d;tag=x``
    (where, per RFC 3261 §20.10, everything after the first ';' is a header parameter).
    """
    text = value.strip()
    display = ""
    if text.startswith('"'):
        quoted = _QUOTED.match(text)
        if quoted is None:
            raise BadRequest("unterminated display name")
        display = _ESCAPE.sub(r"\1", quoted.group(1))
        text = text[quoted.end() :].lstrip()
        if not text.startswith("<"):
            raise BadRequest("display name without <URI>")
    lt = text.find("<")
    if lt < 0:
        uri, _, rest = text.partition(";")
        return display, uri.strip(), _params(rest)
    gt = text.find(">", lt)
    if gt < 0:
        raise BadRequest("unterminated <URI>")
    if not display:
        display = text[:lt].strip()
    rest = text[gt + 1 :].strip()
    if rest and not rest.startswith(";"):
        raise BadRequest("junk after <URI>")
    return display, text[lt + 1 : gt].strip(), _params(rest[1:])


def tag_of(value: str) -> str:
    """The tag parameter of a From/To value, or "" (also for a malformed value)."""
    if "tag" not in value.lower():
        return ""  # the common tagless To skips the parse
    try:
        return parse_name_addr(value)[2].get("tag", "")
    except BadRequest:
        return ""


def address_of(uri: str) -> str:
    """``sip:alice@example.com;transport=tcp`` -> ``alice@example.com`` (no scheme, params)."""
    text = uri.strip()
    if text.startswith("<"):
        text = text[1:].partition(">")[0]
    lowered = text[:5].lower()
    for scheme in _URI_SCHEMES:
        if lowered.startswith(scheme):
            text = text[len(scheme) :]
            break
    end = len(text)
    for stop in (";", "?", ">"):
        at = text.find(stop)
        if 0 <= at < end:
            end = at
    return text[:end]


def same_address(a: str, b: str) -> bool:
    """Two SIP addresses name the same user: scheme, parameters and case aside (the one
    comparison of From, authors and sign-in names; SIPE writes its author in lower case)."""
    return address_of(a).lower() == address_of(b).lower()
