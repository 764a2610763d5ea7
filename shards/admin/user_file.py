"""The user import file of `pchat admin user import`: CSV or JSON Lines, read as a stream.

One user per line (CSV: after a header line naming the columns). The fields:

* ``address`` (required): ``alice@example.com`` or ``sip:alice@example.com``;
* ``password``, or in JSON Lines ``ha1`` instead: the store's own digest hashes,
  ``{"MD5:alice@example.com": "<32 hex>", "SHA-256:alice": "<64 hex>", …}``, keyed by
  algorithm and digest user name (the address or its user part), made for the store's
  domain as realm;
* ``name``: display name (default empty);
* ``enabled``: persistent chat on (default true); ``admin``: administrator (default false).
  CSV takes on/off, true/false, yes/no, 1/0.

Any other field is an error, so a misspelt column is not ignored. Errors are
``ImportLineError`` with the line number; no line is held longer than ``MAX_LINE_BYTES``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from typing import IO

from core.errors import BadRequest
from core.rooms.management import principal
from core.sip.digest import ALGORITHMS, user_ha1s
from core.store.base import UserRecord
from shards.admin.parser import parse_bool

# One user's line: an address, a password or four hashes, a name. 8 KiB is many times
# that, and keeps a file with no newlines (a wrong file) from being read whole.
MAX_LINE_BYTES = 8 * 1024
FIELDS = frozenset({"address", "password", "ha1", "name", "enabled", "admin"})
_HEX_CHARS = {"MD5": 32, "SHA-256": 64}
_HEX = re.compile("[0-9a-f]+")


class ImportLineError(ValueError):
    """A line that cannot be imported; ``str()`` is 'line N: why'."""

    def __init__(self, line: int, why: str) -> None:
        super().__init__(f"line {line}: {why}")
        self.line = line


def read_users(stream: IO[str], fmt: str, domain: str) -> Iterator[tuple[int, UserRecord]]:
    """(line number, user) for each user of ``stream``; the first bad line raises."""
    lines = _bounded_lines(stream)
    rows = _csv_rows(lines) if fmt == "csv" else _jsonl_rows(lines)
    for number, row in rows:
        try:
            yield number, _user(row, domain, csv_text=fmt == "csv")
        except (BadRequest, ValueError, TypeError) as exc:
            raise ImportLineError(number, str(exc)) from None


def _bounded_lines(stream: IO[str]) -> Iterator[tuple[int, str]]:
    number = 0
    while line := stream.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(line) > MAX_LINE_BYTES:
            raise ImportLineError(number, f"longer than {MAX_LINE_BYTES} characters")
        yield number, line


def _jsonl_rows(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, dict[str, object]]]:
    for number, line in lines:
        if not line.strip():
            continue  # a blank line (often the last) is no user
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ImportLineError(number, f"not JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise ImportLineError(number, "not a JSON object")
        yield number, row


def _csv_rows(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, dict[str, object]]]:
    numbers: list[int] = [0]  # the physical line the csv module is reading

    def text() -> Iterator[str]:
        for number, line in lines:
            numbers[0] = number
            yield line

    reader = csv.reader(text())
    header = next(reader, None)
    if header is None:
        return
    columns = [c.strip().lower() for c in header]
    if "address" not in columns:
        raise ImportLineError(1, "the header line must name the columns, address first")
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(columns):
            raise ImportLineError(numbers[0], f"{len(cells)} cells, the header has {len(columns)}")
        yield numbers[0], dict(zip(columns, cells, strict=True))


def _user(row: dict[str, object], domain: str, *, csv_text: bool) -> UserRecord:
    unknown = sorted(set(row) - FIELDS)
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (fields: {', '.join(sorted(FIELDS))})")
    address = row.get("address")
    if not isinstance(address, str) or not address.strip():
        raise ValueError("no address")
    uri = principal(address)
    if not uri.startswith("sip:"):
        raise ValueError(f"{address!r} is not a SIP address")
    password, ha1 = row.get("password"), row.get("ha1")
    if (password in (None, "")) == (ha1 in (None, "")):
        raise ValueError("give either a password or ha1 hashes")
    if password not in (None, ""):
        if not isinstance(password, str):
            raise ValueError("password must be text")
        hashes = user_ha1s(uri, domain, password)
    else:
        hashes = _hashes(uri, ha1)
    name = row.get("name", "")
    if not isinstance(name, str):
        raise ValueError("name must be text")
    return UserRecord(
        uri=uri,
        display_name=name,
        ha1=hashes,
        enabled=_flag(row, "enabled", default=True, csv_text=csv_text),
        admin=_flag(row, "admin", default=False, csv_text=csv_text),
    )


def _flag(row: dict[str, object], key: str, *, default: bool, csv_text: bool) -> bool:
    value = row.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    found = parse_bool(value) if csv_text and isinstance(value, str) else None
    if found is None:
        raise ValueError(f"{key} must be {'on or off' if csv_text else 'true or false'}")
    return found


def _hashes(uri: str, ha1: object) -> dict[str, str]:
    if not isinstance(ha1, dict) or not ha1:
        raise ValueError('ha1 must be an object {"MD5:<user>": "<hex>", …}')
    address = uri[len("sip:") :]
    names = (address, address.partition("@")[0])
    out: dict[str, str] = {}
    for key, value in ha1.items():
        algorithm, _, name = str(key).partition(":")
        if algorithm not in ALGORITHMS or name not in names:
            raise ValueError(f"ha1 key {key!r} is not ALG:{address} or ALG:{names[1]}")
        if not isinstance(value, str) or len(value) != _HEX_CHARS[algorithm]:
            raise ValueError(f"ha1 {key!r} must be {_HEX_CHARS[algorithm]} hex digits")
        if not _HEX.fullmatch(value.lower()):
            raise ValueError(f"ha1 {key!r} must be hex digits")
        out[str(key)] = value.lower()
    if f"MD5:{address}" not in out:
        # The HTTP API signs in with this one; without it the user could sign in by SIP only.
        raise ValueError(f"ha1 needs MD5:{address}")
    return out
