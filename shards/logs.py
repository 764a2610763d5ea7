"""Process logging: one format for the supervisor, the workers and the compliance service.

Log lines carry user input (addresses, headers, reasons): a terminal that shows them must
not run its escapes, and a newline in it must not forge a line. Every control character
(C0 but tab, DEL, C1) and the Unicode bidirectional overrides are written as escapes; a
traceback keeps its newlines, nothing else.
"""

from __future__ import annotations

import logging
import re
from types import TracebackType

# C0 but tab, DEL, C1; the bidi embeddings, overrides and isolates (Trojan Source).
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def _escape_one(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every character a terminal would act on written as an escape."""
    if keep_newlines:
        return "\n".join(_UNSAFE.sub(_escape_one, line) for line in text.split("\n"))
    return _UNSAFE.sub(_escape_one, text)


class SafeFormatter(logging.Formatter):
    """A Formatter whose output holds no terminal control characters from the message."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (stdlib name)
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: ExcInfo) -> str:  # noqa: N802
        return escape_controls(super().formatException(ei), keep_newlines=True)

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return escape_controls(super().formatStack(stack_info), keep_newlines=True)


def setup_logging(level: str, process: str = "") -> None:
    """Logs to stderr with ``SafeFormatter``; ``process`` names the process in each line."""
    name = f" {process}" if process else ""
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter(f"%(asctime)s{name} %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
