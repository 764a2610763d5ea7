"""Operators' logs of a real `pchat serve`: JSON lines, the HTTP access log (off unless
asked), and the audit log of administrative changes from `pchat admin` and the HTTP API."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.e2e.cluster import free_port, wait_http_healthy
from tests.e2e.test_admin import admin, clean_env, run
from tests.e2e.test_serve import DOMAIN


@asynccontextmanager
async def serving_logged(data: Path, *extra: str) -> AsyncIterator[tuple[int, list[str]]]:
    """A served data dir; yields the HTTP port and the stderr lines, complete after exit."""
    http = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shards.cli", "serve", "--data-dir", str(data),
        "--sip-port", str(free_port()), "--http-port", str(http), "--http-host", "127.0.0.1",
        "--sip-host", "127.0.0.1", *extra, env=clean_env(), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    lines: list[str] = []

    async def drain() -> None:  # a full pipe would stop the server's logging
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            lines.append(line.decode())

    reader = asyncio.create_task(drain())
    try:
        await wait_http_healthy(http)
        yield http, lines
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 20)
        await asyncio.wait_for(reader, 5)


async def curl(*args: str) -> tuple[int, str]:
    code, out, _ = await run("curl", "-s", "-w", "\n%{http_code}", *args, cwd=Path("/"))
    assert code == 0
    body, _, status = out.rpartition("\n")
    return int(status), body


async def test_json_logs_and_the_access_log_hold_no_secret(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert (await admin("init", data_dir=data))[0] == 0
    await admin("user", "add", f"alice@{DOMAIN}", "--password", "alice-secret-pw", data_dir=data)
    await admin("user", "grant-admin", f"alice@{DOMAIN}", data_dir=data)
    async with serving_logged(data, "--log-format", "json", "--access-log") as (http, lines):
        user = f"alice@{DOMAIN}:alice-secret-pw"
        url = f"http://127.0.0.1:{http}"
        assert (await curl("-u", user, f"{url}/api/rooms?token=query-secret"))[0] == 200
        assert (await curl("-u", f"alice@{DOMAIN}:wrong", f"{url}/api/rooms"))[0] == 401
        await asyncio.sleep(0.5)
    entries = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    assert len(entries) == len(lines) and entries
    for entry in entries:
        assert {"time", "level", "process", "pid", "logger", "message"} <= entry.keys()
    assert {"supervisor", "worker-0"} <= {e["process"] for e in entries}
    access = [e for e in entries if e["logger"] == "pchat.access"]
    ok = next(e["fields"] for e in access if e["fields"]["path"].startswith("/api/"))
    assert ok["method"] == "GET" and ok["path"] == "/api/rooms"  # no query string
    assert ok["user"] == f"sip:alice@{DOMAIN}" and ok["peer"] == "127.0.0.1"
    assert ok["bytes"] > 0 and ok["ms"] >= 0
    assert ok["status"] == 200
    refused = next(e["fields"] for e in access if e["fields"]["status"] == 401)
    assert refused["user"] == ""
    text = "".join(lines)
    for secret in ("alice-secret-pw", "query-secret", "Authorization", "Basic "):
        assert secret not in text


async def test_the_access_log_is_off_unless_asked(tmp_path: Path) -> None:
    async with serving_logged(tmp_path / "data") as (http, lines):
        assert (await curl(f"http://127.0.0.1:{http}/healthz"))[0] == 200
        await asyncio.sleep(0.3)
    assert lines and not any("pchat.access" in line or "/healthz" in line for line in lines)
    assert not any(line.lstrip().startswith("{") for line in lines)  # text unless asked


async def test_the_audit_log_records_who_changed_what_from_where(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with serving_logged(data) as (http, _):
        for args in (
            ("user", "add", f"ann@{DOMAIN}", "--password", "ann-secret-pw", "--name", "Ann"),
            ("user", "grant-admin", f"ann@{DOMAIN}"),
            ("category", "add", "General"),
            ("room", "add", "Lobby", "--category", "General"),
            ("room", "list"),  # shows, changes nothing: not recorded
        ):
            assert (await admin(*args, data_dir=data))[0] == 0
        status, _ = await curl(
            "-u", f"ann@{DOMAIN}:ann-secret-pw", "-X", "PATCH",
            f"http://127.0.0.1:{http}/api/rooms/Lobby",
            "-H", "Content-Type: application/json", "-d", '{"topic": "Q4", "members": []}',
        )  # fmt: skip
        assert status == 200
    audit = data / "audit.log"
    assert audit.stat().st_mode & 0o777 == 0o600
    text = audit.read_text()
    assert "ann-secret-pw" not in text
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["action"] for r in records] == [
        "user add", "user grant-admin", "category add", "room add",
        "PATCH /api/rooms/{room}",
    ]  # fmt: skip
    add = records[0]
    assert add["via"] == "admin-cli" and add["target"] == f"ann@{DOMAIN}"
    assert add["details"] == {"name": "Ann"} and add["actor"] and " pid " in add["source"]
    api = records[-1]
    assert api["via"] == "http-api" and api["actor"] == f"sip:ann@{DOMAIN}"
    assert api["source"] == "127.0.0.1" and api["target"] == "Lobby"
    assert api["details"] == {"topic": "Q4", "members": []}
    assert all(r["time"].endswith("Z") for r in records)
