"""`pchat serve --workers N` as a test fixture: a private redis, real processes, free ports."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from client.client import PchatClient
from shards.redis_server import EmbeddedRedis

DOMAIN = "example.com"
PASSWORD = "pw"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def http_get(url: str) -> tuple[int, str]:
    def fetch() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    return await asyncio.to_thread(fetch)


async def _healthz_ok(http_port: int) -> bool:
    try:
        return (await http_get(f"http://127.0.0.1:{http_port}/healthz"))[0] == 200
    except OSError:
        return False


async def wait_http_healthy(http_port: int, timeout_s: float = 10.0) -> None:
    """Polls /healthz until it answers 200; fails the test past ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if await _healthz_ok(http_port):
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"pchat serve did not become healthy within {timeout_s:g} s")


class Cluster:
    """A supervisor with N workers on its own data dir and its own redis-server."""

    def __init__(
        self,
        data_dir: Path,
        workers: int,
        *extra: str,
        env: dict[str, str] | None = None,
        redis_cluster_url: str = "",
        file_service: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.sip = free_port()
        self.http = free_port()
        # The file service (shards/file_service.py) on a free port of its own, or off: said
        # explicitly, so that test servers side by side never meet on its default port.
        self.files = free_port() if file_service else -1
        self.redis = EmbeddedRedis(
            str(data_dir / "test-redis.sock"), str(data_dir / "test-redis.log")
        )
        # A node of a Redis Cluster the test started: the bus runs on it (--redis-cluster)
        # and no redis-server of its own is started.
        self.redis_args = (
            ("--redis-url", redis_cluster_url, "--redis-cluster")
            if redis_cluster_url
            else ("--redis-url", self.redis.url)
        )
        self.extra = extra
        self.env = env or {}
        self.proc: asyncio.subprocess.Process | None = None

    def _process_env(self) -> dict[str, str]:
        """The caller's environment without PCHAT_*, plus this cluster's settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PCHAT_")}
        env["PCHAT_FILES__SERVICE_PORT"] = str(self.files)
        env.update(self.env)
        return env

    async def start(self) -> None:
        if "--redis-cluster" not in self.redis_args:
            self.redis.start()
        env = self._process_env()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shards.cli", "serve", "--data-dir", str(self.data_dir),
            "--sip-port", str(self.sip), "--http-port", str(self.http),
            "--workers", str(self.workers), "--domain", DOMAIN, *self.redis_args,
            *self.extra, env=env,
        )  # fmt: skip
        await self.wait_healthy()

    async def wait_healthy(self, timeout_s: float = 20.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if len(self.worker_pids()) == self.workers and await _healthz_ok(self.http):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError("cluster did not become healthy")

    async def wait_files_healthy(self, timeout_s: float = 20.0) -> None:
        """Until the file service answers /healthz with 200 (it starts beside the workers)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if self.file_service_pid() is not None and await _healthz_ok(self.files):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError("the file service did not become healthy")

    def file_service_pid(self) -> int | None:
        """The file service's pid, from the supervisor's files.pid; None: not running."""
        pids = self.worker_pids("files.pid")
        return next(iter(pids.values()), None)

    def worker_pids(self, name: str = "workers.pid") -> dict[int, int]:
        """worker id -> pid, from the supervisor's pid file."""
        path = self.data_dir / name
        if not path.exists():
            return {}
        out = {}
        for line in path.read_text().splitlines():
            worker, pid = line.split()
            out[int(worker)] = int(pid)
        return out

    async def admin(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shards.cli", "admin", *args, "--data-dir", str(self.data_dir),
            *self.redis_args, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self._process_env(),
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        return out.decode().strip()

    async def client(self, user: str) -> PchatClient:
        client = await PchatClient.connect("127.0.0.1", self.sip, f"{user}@{DOMAIN}", PASSWORD)
        await client.sign_in()
        return client

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.redis.stop()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def worker_of(client: PchatClient) -> int:
    """The worker that holds the client's connection (from the INVITE's Server header)."""
    return client.server_worker
