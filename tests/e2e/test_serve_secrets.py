"""No password reaches the supervisor's or the workers' log (issue 10 finding 6)."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from shards.redis_server import redis_binary
from tests.e2e.cluster import free_port, wait_http_healthy
from tests.e2e.test_serve import DOMAIN
from tests.integration.conftest import _pg_admin

REDIS_PASSWORD = "hunter2-redis"
PG_PASSWORD = "hunter2-pg"  # trust auth ignores it; it is only there to be logged or not


@pytest.fixture
def redis_with_password() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen(
        [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--requirepass",
         REDIS_PASSWORD, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield port, proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    admin, admin_dsn = await _pg_admin()
    name = f"pchat_test_{secrets.token_hex(6)}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_dsn)
    try:
        netloc = f"{parts.username}:{PG_PASSWORD}@{parts.hostname}:{parts.port}"
        yield parts._replace(netloc=netloc, path=f"/{name}").geturl()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_logged_urls_carry_no_password(
    redis_with_password: tuple[int, subprocess.Popen[bytes]], pg_url: str, tmp_path: Path
) -> None:
    http = free_port()
    redis_port, redis_proc = redis_with_password
    redis_url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_port}/0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PCHAT_")}
    env["PCHAT_FILES__SERVICE_PORT"] = str(free_port())  # its Redis link logs no password too
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shards.cli", "serve", "--data-dir", str(tmp_path),
        "--sip-port", str(free_port()), "--http-port", str(http), "--workers", "2",
        "--domain", DOMAIN, "--redis-url", redis_url, "--store", pg_url,
        env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_http_healthy(http)
        # Two workers, so they talk over the bus; with Redis gone, each reconnect logs the URL.
        redis_proc.kill()
        redis_proc.wait()
        await asyncio.sleep(2.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err_bytes = await asyncio.wait_for(proc.communicate(), 20)
    err = err_bytes.decode()
    assert "pchat serving" in err, err
    redacted = f"redis://:***@127.0.0.1:{redis_port}/0"
    assert f"redis {redacted}" in err
    assert f"Redis at {redacted} unavailable" in err, err
    assert f"store {pg_url.replace(PG_PASSWORD, '***')}" in err
    assert REDIS_PASSWORD not in err and PG_PASSWORD not in err
