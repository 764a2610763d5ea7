"""`pchat serve` refuses a pool of several hosts on an SQLite store (issue #14, point 4)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path


async def test_serve_refuses_several_hosts_on_sqlite(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PCHAT_")}
    env["PCHAT_POOL_HOSTS"] = "2"
    env["PCHAT_FILES__SERVICE_PORT"] = "-1"  # said explicitly: test servers never meet on 8081
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shards.cli", "serve", "--data-dir", str(tmp_path),
        "--sip-port", "0", "--http-port", "0", "--workers", "1",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert lines == [
        "pchat: pool_hosts = 2 needs a shared PostgreSQL store (store = postgresql://...); "
        "an SQLite store belongs to one host"
    ]
    assert out == b""
    # refused before anything started: no store, no embedded redis, no workers
    assert not (tmp_path / "chat.db").exists()
    assert not (tmp_path / "workers.pid").exists()
