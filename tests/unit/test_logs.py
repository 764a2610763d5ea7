"""Log lines hold no terminal control characters (shards/logs.py)."""

from __future__ import annotations

import logging

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
