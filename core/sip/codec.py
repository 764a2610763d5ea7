"""Sans-IO SIP stream codec (protocol layer): bytes in, typed messages out, never a transport."""

from __future__ import annotations

import re

from core.errors import FramingLost
from core.sip.message import (
    SipMessage,
    encode_message,
    header_name,
    is_token,
    known_header_name,
)

_CRLF2 = b"\r\n\r\n"
# A ping may arrive split; while the buffer holds only a prefix of it we wait.
_PING_PREFIXES = (b"\r", b"\r\n", b"\r\n\r")
# Methods seen every message skip the token regex.
_METHODS = frozenset(("INFO", "INVITE", "ACK", "BYE", "UPDATE", "SUBSCRIBE", "OPTIONS", "NOTIFY"))
# Twenty digits already exceed any length we could skip; more is an attack on int().
_MAX_LENGTH_DIGITS = 20


class Ping:
    """A double-CRLF keep-alive (RFC 5626 §3.5.1); the peer expects a single CRLF back."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PING"


PING = Ping()


class BadMessage:
    """A framed message that cannot be used; the stream stays in sync.

    ``message`` holds the start line and the headers that did parse, so a reply can copy
    Via/From/To/Call-ID/CSeq; it is None when the start line itself is malformed.
    ``reason`` is fixed text (never peer bytes), safe for a Warning header.
    """

    __slots__ = ("status", "reason", "message")

    def __init__(self, status: int, reason: str, message: SipMessage | None = None) -> None:
        self.status = status
        self.reason = reason
        self.message = message

    def __repr__(self) -> str:
        return f"<BadMessage {self.status} {self.reason!r} {self.message!r}>"


def _start_line(line: str) -> SipMessage | None:
    if line.startswith("SIP/2.0 "):
        code, _, reason = line[8:].partition(" ")
        if len(code) == 3 and code.isascii() and code.isdigit() and code[0] in "123456":
            return SipMessage(status=int(code), reason=reason.strip())
        return None
    parts = line.split(" ")
    if len(parts) != 3 or parts[2] != "SIP/2.0" or not parts[1]:
        return None
    if parts[0] in _METHODS or is_token(parts[0]):
        return SipMessage(method=parts[0], uri=parts[1])
    return None


def _content_length(headers: list[tuple[str, str]]) -> int:
    # RFC 3261 §18.3: on a stream the length is mandatory; without a single sane value we
    # cannot tell where the next message starts, so the connection has to go.
    found: str | None = None
    for name, value in headers:
        if name == "Content-Length":
            if found is not None and found != value:
                raise FramingLost("conflicting Content-Length headers")
            found = value
    if found is None:
        raise FramingLost("missing Content-Length")
    if not (found.isascii() and found.isdigit()) or len(found) > _MAX_LENGTH_DIGITS:
        raise FramingLost("malformed Content-Length")
    return int(found)


def _headers(lines: list[str]) -> tuple[list[tuple[str, str]], str]:
    headers: list[tuple[str, str]] = []
    append = headers.append
    known = known_header_name
    error = ""
    for line in lines:
        if line[0] in " \t":
            # RFC 3261 §7.3.1: a continuation line joins the previous value with one space.
            if not headers:
                error = error or "continuation line before any header"
                continue
            name, value = headers[-1]
            more = line.strip()
            headers[-1] = (name, f"{value} {more}" if value else more)
            continue
        name, colon, value = line.partition(":")
        canon = known(name)
        if canon is None or not colon:
            canon = header_name(name.rstrip()) if colon else None
            if canon is None:
                error = error or ("header line without a colon" if not colon else "bad header name")
                continue
        append((canon, value.strip()))
    return headers, error


def _clean_lines(text: str) -> tuple[list[str], str]:
    lines = text.split("\r\n")
    # A bare CR or LF inside a line would be copied into replies as a line break (header
    # injection); counting is cheaper than scanning each line and almost always matches.
    breaks = len(lines) - 1
    if text.count("\n") == breaks and text.count("\r") == breaks:
        return lines, ""
    kept = [line for line in lines if "\r" not in line and "\n" not in line]
    return kept, "bare CR or LF in the header block"


def _parse_head(block: bytes | bytearray) -> tuple[SipMessage | BadMessage, int]:
    # The block is what precedes the first CRLFCRLF and does not start with CR, so no line
    # in it is empty. FramingLost when Content-Length is missing or unusable.
    try:
        text = block.decode("utf-8")
        error = ""
    except UnicodeDecodeError:
        text = block.decode("utf-8", "replace")
        error = "header block is not valid UTF-8"
    lines, line_error = _clean_lines(text)
    error = error or line_error
    msg = _start_line(lines[0]) if lines else None
    headers, header_error = _headers(lines[1:])
    body_len = _content_length(headers)
    if msg is None:
        if lines and lines[0].startswith("SIP/"):
            return BadMessage(400, "malformed status line"), body_len
        # Still a request as far as we can tell: keep its headers so the 400 can copy
        # Via, From, To, Call-ID and CSeq (XCCOS.md §1).
        return BadMessage(
            400, "malformed start line", SipMessage(method="-", uri="-", headers=headers)
        ), body_len
    msg.headers = headers
    error = error or header_error
    if error:
        return BadMessage(400, error, msg), body_len
    return msg, body_len


class SipCodec:
    """Splits a SIP byte stream (TCP/TLS) into messages framed by Content-Length.

    Invariant: after ``feed`` returns, the buffer holds at most one unfinished message
    and no bytes of a skipped (413) body.
    """

    __slots__ = (
        "_buf",
        "_max_header",
        "_max_body",
        "_scan",
        "_pending",
        "_body_len",
        "_skip",
        "_drop_2xx",
        "dropped_2xx",
    )

    def __init__(
        self,
        *,
        max_header_bytes: int = 16384,
        max_body_bytes: int = 65536,
        drop_2xx_responses: bool = False,
    ) -> None:
        self._buf = bytearray()
        self._max_header = max_header_bytes  # XCCOS §1: 16 KiB by default
        self._max_body = max_body_bytes  # XCCOS §1: 64 KiB by default
        self._scan = 0  # where to resume looking for CRLFCRLF, so slow peers cost O(n)
        self._pending: SipMessage | BadMessage | None = None  # head parsed, body incomplete
        self._body_len = 0
        self._skip = 0  # bytes of an oversized body still to discard
        # A server that only needs the errors among the answers to its own requests (every
        # delivered post is answered 200) frames 2xx responses and drops them unparsed:
        # parsing them was 39 % of a fan-out worker's time (bench/README.md).
        self._drop_2xx = drop_2xx_responses
        self.dropped_2xx = 0

    @staticmethod
    def encode(msg: SipMessage) -> bytes:
        return encode_message(msg)

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[SipMessage | BadMessage | Ping]:
        """Every complete item in the stream so far; raises FramingLost when sync is lost."""
        out: list[SipMessage | BadMessage | Ping] = []
        if self._skip:
            data = self._discard(data)
        # Usually the buffer is empty and a read holds whole messages: parse straight from
        # the read and keep only the tail, saving two copies of every message.
        buf: bytes | bytearray = data
        if self._buf:
            buf = self._buf
            buf += data
        size = len(buf)
        pos = 0
        scan = self._scan
        while pos < size:
            if self._pending is None:
                if buf[pos] == 13:  # CR: a keep-alive or a stray CRLF, not a start line
                    step = _crlf_step(buf, pos, size)
                    if step < 0:
                        break
                    if step:
                        if step == 4:
                            out.append(PING)
                        pos += step
                        continue
                end = buf.find(_CRLF2, max(pos, scan))
                if end < 0 or end + 4 - pos > self._max_header:
                    # Unterminated within the limit, or terminated past it (size > end + 3).
                    if size - pos >= self._max_header:
                        raise FramingLost("header block over the limit")
                    scan = size - 3
                    break
                if self._drop_2xx and buf.startswith(b"SIP/2.0 2", pos):
                    length = _LENGTH.search(buf, pos, end + 2)
                    # A second length header goes to the full parser, which decides as
                    # for any message (equal: fine; conflicting: framing is lost).
                    if length is not None and not _LENGTH.search(buf, length.end() - 2, end + 2):
                        body_len = int(length.group(1))
                        pos = end + 4
                        take = min(size - pos, body_len)
                        pos += take
                        self._skip = body_len - take
                        self.dropped_2xx += 1
                        continue
                item, body_len = _parse_head(buf[pos:end])
                pos = end + 4
                if body_len > self._max_body:
                    out.append(BadMessage(413, "body over the size limit", _message_of(item)))
                    take = min(size - pos, body_len)
                    pos += take
                    self._skip = body_len - take  # the rest is dropped as it arrives
                    continue
                self._pending = item
                self._body_len = body_len
            end = pos + self._body_len
            if end > size:
                break
            out.append(self._complete(bytes(buf[pos:end])))
            pos = end
        if buf is self._buf:
            del self._buf[:pos]
        elif pos < size:
            self._buf += buf[pos:]
        self._scan = max(0, scan - pos)
        return out

    def _discard(self, data: bytes) -> bytes:
        if len(data) <= self._skip:
            self._skip -= len(data)
            return b""
        data = data[self._skip :]
        self._skip = 0
        return data

    def _complete(self, body: bytes) -> SipMessage | BadMessage:
        item = self._pending
        assert item is not None
        self._pending = None
        if isinstance(item, SipMessage):
            item.body = body
        elif item.message is not None:
            item.message.body = body
        return item


# Content-Length (or its compact form l) of a 2xx being dropped; no match: parse it fully.
_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(\d{1,20})[ \t]*\r\n", re.IGNORECASE)


def _crlf_step(buf: bytes | bytearray, pos: int, size: int) -> int:
    """At a CR between messages: 4 for a ping, 2 for a stray CRLF, 0 if neither, -1 to wait."""
    if buf.startswith(_CRLF2, pos):
        return 4
    if size - pos < 4 and bytes(buf[pos:]) in _PING_PREFIXES:
        return -1
    return 2 if buf.startswith(b"\r\n", pos) else 0


def _message_of(item: SipMessage | BadMessage) -> SipMessage | None:
    return item if isinstance(item, SipMessage) else item.message
