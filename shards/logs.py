"""Process logging: one format for the supervisor, the workers and the compliance service.

Log lines carry user input (addresses, headers, reasons): a terminal that shows them must
not run its escapes, and a newline in it must not forge a line. Every control character
(C0 but tab, DEL, C1) and the Unicode bidirectional overrides are written as escapes; a
traceback keeps its newlines, nothing else.

``log.format = "json"`` writes one JSON object per line instead (``JsonFormatter``): time,
level, process, pid, logger, message, the record's ``fields`` and any traceback, all in
one line, every non-ASCII and control character escaped by JSON itself.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
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


def fields_of(record: logging.LogRecord) -> Mapping[str, object]:
    """The structured fields a caller gave with ``extra={"fields": {...}}`` (else none)."""
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else {}


class SafeFormatter(logging.Formatter):
    """A Formatter whose output holds no terminal control characters from the message;
    a record's fields follow the message as ``key=value``."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (stdlib name)
        text = record.message
        fields = fields_of(record)
        if fields:
            text += " " + " ".join(
                f"{k}={json.dumps(v, ensure_ascii=True)}" for k, v in fields.items()
            )
        record.message = escape_controls(text)
        return super().formatMessage(record)

    def formatException(self, ei: ExcInfo) -> str:  # noqa: N802
        return escape_controls(super().formatException(ei), keep_newlines=True)

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return escape_controls(super().formatStack(stack_info), keep_newlines=True)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what a log collector parses without a grammar."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self._process = process or "pchat"

    def format(self, record: logging.LogRecord) -> str:
        ms = int(record.created * 1000) % 1000
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, object] = {
            "time": f"{stamp}.{ms:03d}Z",
            "level": record.levelname,
            "process": self._process,
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = fields_of(record)
        if fields:
            out["fields"] = dict(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        # ensure_ascii: every control, bidi or other non-ASCII character becomes \uXXXX, so
        # the line is as safe on a terminal as SafeFormatter's. default=str: a field that is
        # no JSON type (a Path, an exception) is logged as its text, never dropped.
        return json.dumps(out, ensure_ascii=True, default=str)


LOG_FORMATS = ("text", "json")


def setup_logging(level: str, process: str = "", fmt: str = "text") -> None:
    """Logs to stderr with ``SafeFormatter`` (or ``JsonFormatter`` for ``fmt="json"``);
    ``process`` names the process in each line."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter(process))
    else:
        name = f" {process}" if process else ""
        handler.setFormatter(
            SafeFormatter(f"%(asctime)s{name} %(levelname)s %(name)s: %(message)s")
        )
    logging.basicConfig(level=level, handlers=[handler])
