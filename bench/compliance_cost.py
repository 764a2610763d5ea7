"""What compliance costs: post throughput with it off and on, in one run, and the backlog.

    python -m bench.compliance_cost [--clients 16] [--seconds 10] [--workers 1]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

Starts `pchat serve` twice on a fresh data dir with a private redis-server (compliance
off, then on), lets --clients clients post as fast as the server acknowledges for
--seconds each, samples the compliance backlog every 0.5 s while it runs, and writes
bench/results/compliance-<time>/result.json. Loopback only; bounded in count and time.
With --postgres (an admin DSN), each run gets a fresh database, dropped afterwards, that
holds both the chat store and the compliance store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from client.client import PchatClient
from shards.redis_server import EmbeddedRedis

DOMAIN = "example.com"
PASSWORD = "pw"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def _stores(admin_dsn: str) -> AsyncIterator[dict[str, str]]:
    """The env that puts both stores on a fresh database (none: SQLite files)."""
    if not admin_dsn:
        yield {}
        return
    admin = await asyncpg.connect(admin_dsn)
    name = f"pchat_bench_{os.getpid()}_{int(time.time())}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = urlsplit(admin_dsn)._replace(path=f"/{name}").geturl()
        yield {"PCHAT_STORE": url, "PCHAT_COMPLIANCE__STORE": url}
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _admin(data: Path, redis_url: str, env: dict[str, str], *args: str) -> str:
    cmd = [
        sys.executable,
        "-m",
        "shards.cli",
        "admin",
        *args,
        "--data-dir",
        str(data),
        "--redis-url",
        redis_url,
    ]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return done.stdout.strip()


def _gauges(http: int) -> tuple[float, float]:
    """(events in the outbox, events not yet archived) from /metrics."""
    found = {"pchat_compliance_outbox_events": 0.0, "pchat_compliance_backlog_events": 0.0}
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            name, _, value = line.partition(" ")
            if name in found:
                found[name] = float(value)
    return found["pchat_compliance_outbox_events"], found["pchat_compliance_backlog_events"]


async def _run(
    compliance: bool, clients: int, seconds: float, workers: int, stores: dict[str, str]
) -> dict[str, float]:
    data = Path(tempfile.mkdtemp(prefix="pchat-bench-"))
    redis = EmbeddedRedis(str(data / "r.sock"), str(data / "r.log"))
    redis.start()
    sip, http = _port(), _port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PCHAT_")} | stores
    if (Path(__file__).parents[1] / "shards/file_service.py").exists():
        env["PCHAT_FILES__SERVICE_PORT"] = "-1"  # said explicitly: benches never meet on 8081
    args = [
        sys.executable, "-m", "shards.cli", "serve", "--data-dir", str(data),
        "--domain", DOMAIN, "--sip-port", str(sip), "--http-port", str(http),
        "--workers", str(workers), "--redis-url", redis.url, "--log-level", "WARNING",
    ]  # fmt: skip
    if compliance:
        args.append("--compliance")
    proc = subprocess.Popen(args, env=env)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        for i in range(clients):
            _admin(data, redis.url, env, "user", "add", f"b{i}@{DOMAIN}", "--password", PASSWORD)
        _admin(data, redis.url, env, "category", "add", "Bench")
        room = _admin(
            data, redis.url, env, "room", "add", "Bench", "--category", "Bench", "--privacy", "open"
        )
        conns = [
            await PchatClient.connect("127.0.0.1", sip, f"b{i}@{DOMAIN}", PASSWORD)
            for i in range(clients)
        ]
        for c in conns:
            await c.sign_in()
            await c.join(room)
        posted = 0
        outbox_max = backlog_max = 0.0
        end = time.monotonic() + seconds

        async def post(c: PchatClient) -> None:
            nonlocal posted
            while time.monotonic() < end:
                await c.post(room, "x" * 100)
                posted += 1

        async def watch() -> None:
            nonlocal outbox_max, backlog_max
            while time.monotonic() < end:
                outbox, backlog = await asyncio.to_thread(_gauges, http)
                outbox_max, backlog_max = max(outbox_max, outbox), max(backlog_max, backlog)
                await asyncio.sleep(0.5)

        started = time.monotonic()
        await asyncio.gather(watch(), *(post(c) for c in conns))
        elapsed = time.monotonic() - started
        for c in conns:
            await c.close()
        await asyncio.sleep(1.5)
        outbox_after, backlog_after = await asyncio.to_thread(_gauges, http)
        return {
            "posts_per_s": posted / elapsed,
            "outbox_max": outbox_max,  # the durable queue: drained continuously
            "outbox_after_1_5s": outbox_after,
            "backlog_max": backlog_max,  # not yet archived: grows until the adapters run
            "backlog_after_1_5s": backlog_after,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        redis.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--postgres", default="", help="admin DSN: both stores on PostgreSQL")
    a = parser.parse_args()
    async with _stores(a.postgres) as stores:
        off = await _run(False, a.clients, a.seconds, a.workers, stores)
    async with _stores(a.postgres) as stores:
        on = await _run(True, a.clients, a.seconds, a.workers, stores)
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "clients": a.clients,
        "seconds": a.seconds,
        "workers": a.workers,
        "stores": "postgresql" if a.postgres else "sqlite",
        "off": off,
        "on": on,
        "throughput_ratio_on_off": on["posts_per_s"] / off["posts_per_s"],
    }
    out = Path(__file__).parent / "results" / f"compliance-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
