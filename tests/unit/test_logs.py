"""Log lines hold no terminal control characters (shards/logs.py)."""

from __future__ import annotations

import logging
import re

from shards.logs import SafeFormatter, escape_controls


def test_controls_become_escapes_and_the_rest_stays() -> None:
    assert escape_controls("a\x1b[31mb\x07\r\nc\x7f\x9b\u202ed") == (
        "a\\x1b[31mb\\x07\\x0d\\x0ac\\x7f\\x9b\\u202ed"
    )
    assert escape_controls("tab\tand é, 中文") == "tab\tand é, 中文"
    assert escape_controls("one\ntwo\x1b", keep_newlines=True) == "one\ntwo\\x1b"


def test_a_forged_line_or_escape_in_a_message_or_traceback_is_escaped() -> None:
    formatter = SafeFormatter("%(levelname)s %(message)s")
    try:
        raise ValueError("bad \x1b]0;title\x07")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "t", logging.INFO, __file__, 1, "user %s", ("x\nINFO forged",), sys.exc_info()
        )
    line = formatter.format(record)
    assert line.startswith("INFO user x\\x0aINFO forged\nTraceback")
    assert "\x1b" not in line and "\x07" not in line
    assert "bad \\x1b]0;title\\x07" in line


def test_json_lines_hold_time_level_process_message_fields_and_traceback() -> None:
    import json

    from shards.logs import JsonFormatter

    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "pchat.x",
            logging.WARNING,
            __file__,
            1,
            "user %s\n",
            ("a\x1b[31m\u202e",),
            sys.exc_info(),
        )
    record.fields = {"status": 403, "path": "/api/rooms"}
    line = JsonFormatter("worker-0").format(record)
    assert "\n" not in line and "\x1b" not in line and "\u202e" not in line  # one safe line
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["process"] == "worker-0"
    assert entry["logger"] == "pchat.x" and entry["message"] == "user a\x1b[31m\u202e\n"
    assert entry["fields"] == {"status": 403, "path": "/api/rooms"}
    assert entry["exception"].startswith("Traceback") and "ValueError: boom" in entry["exception"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])


def test_text_lines_show_the_fields_after_the_message() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "GET %s", ("/x",), None)
    record.fields = {"status": 200, "user": "sip:a@x\n"}
    line = SafeFormatter("%(levelname)s %(message)s").format(record)
    assert line == 'INFO GET /x status=200 user="sip:a@x\\n"'
