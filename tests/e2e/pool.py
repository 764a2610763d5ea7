"""A pool of three hosts on one machine as a test fixture: three `pchat serve` supervisors
bound to 127.0.0.2, .3 and .4, one private redis-server on a free TCP port (or a given
Redis Cluster), one fresh PostgreSQL database (issue 14: shard leases, fencing, takeover)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from client.client import PchatClient, PoolAddresses
from shards.leases import lease_key
from shards.redis_server import redis_binary
from shards.routing import ShardMap
from tests.e2e.cluster import DOMAIN, PASSWORD, free_port, http_get
from tests.integration.conftest import _pg_admin
from tests.redis_cluster import RedisClusterNodes

HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
SHARDS = 1024


class TcpRedis:
    """A redis-server every host reaches over TCP; nothing kept on disk."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


class Host:
    """One `pchat serve` of the pool, in its own process group (a whole host to kill)."""

    def __init__(self, pool: Pool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.host_id = index + 1
        self.addr = HOSTS[index]
        self.data_dir = pool.folder / f"host{self.host_id}"
        self.data_dir.mkdir(exist_ok=True)
        self.log = self.data_dir / "serve.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PCHAT_")}
        env.update(
            PCHAT_POOL_HOSTS=str(len(HOSTS)),
            PCHAT_LEASES__HOST_ID=str(self.host_id),
            PCHAT_STORE=self.pool.store_url,
            PCHAT_FILES__SERVICE_PORT="-1",  # said explicitly: pools side by side never meet
        )
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "shards.cli", "serve", "--data-dir", str(self.data_dir),
                "--sip-host", self.addr, "--sip-port", str(self.pool.sip),
                "--http-host", self.addr, "--http-port", str(self.pool.http),
                "--workers", str(self.pool.workers), "--domain", DOMAIN,
                *self.pool.redis_args,
                env=env, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip

    async def health(self) -> dict[str, Any] | None:
        try:
            status, body = await http_get(f"http://{self.addr}:{self.pool.http}/healthz")
        except OSError:
            return None
        return json.loads(body) if status == 200 else None

    def worker_pid(self) -> int:
        line = (self.data_dir / "workers.pid").read_text().split()
        return int(line[1])

    def kill_9(self) -> None:
        """The whole host at once: supervisor and workers (its process group)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)

    async def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGCONT)  # a test may have left a worker stopped
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except ProcessLookupError:
            pass
        except TimeoutError:
            os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


class Pool:
    def __init__(
        self, folder: Path, workers: int = 1, cluster: RedisClusterNodes | None = None
    ) -> None:
        self.folder = folder
        self.workers = workers
        self.cluster = cluster  # the pool's Redis is this Redis Cluster, not its own server
        self.sip = free_port()
        self.http = free_port()
        self.redis = TcpRedis(folder)
        self.store_url = ""
        self._db = ""
        self.hosts = [Host(self, i) for i in range(len(HOSTS))]
        self.map = ShardMap(shards=SHARDS, workers=workers, domain=DOMAIN)

    async def open(self) -> None:
        admin, dsn = await _pg_admin()
        self._db = f"pchat_pool_{secrets.token_hex(6)}"
        try:
            await admin.execute(f'CREATE DATABASE "{self._db}"')
        finally:
            await admin.close()
        self.store_url = urlsplit(dsn)._replace(path=f"/{self._db}").geturl()
        if self.cluster is None:
            await self.redis.start()

    @property
    def redis_args(self) -> list[str]:
        """The `pchat serve`/`admin` flags that name the pool's Redis."""
        if self.cluster is not None:
            return ["--redis-url", self.cluster.url, "--redis-cluster"]
        return ["--redis-url", self.redis.url]

    async def close(self) -> None:
        await asyncio.gather(*(h.stop() for h in self.hosts))
        self.redis.stop()
        if self._db:
            admin, _ = await _pg_admin()
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self._db}" WITH (FORCE)')
            finally:
                await admin.close()

    async def shares(self) -> dict[int, int]:
        """Host index -> shards its workers hold, for the hosts that answer."""
        out = {}
        for host in self.hosts:
            health = await host.health()
            if health is not None:
                out[host.index] = int(health["shards"])
        return out

    async def settled(self, hosts: list[int], timeout_s: float = 60.0) -> dict[int, int]:
        """Waits until exactly ``hosts`` hold every shard, each a fair share."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        shares: dict[int, int] = {}
        while loop.time() < deadline:
            shares = await self.shares()
            fair = SHARDS / len(hosts)
            if (
                sorted(k for k, v in shares.items() if v) == sorted(hosts)
                and sum(shares.values()) == SHARDS
                and all(abs(shares[h] - fair) < fair * 0.25 for h in hosts)
            ):
                return shares
            await asyncio.sleep(0.2)
        raise AssertionError(f"the pool did not settle on hosts {hosts}: {shares}")

    async def admin(self, *args: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PCHAT_")}
        env["PCHAT_STORE"] = self.store_url
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shards.cli", "admin", *args,
            "--data-dir", str(self.hosts[0].data_dir), *self.redis_args,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        return out.decode().strip()

    def addresses(self, first: int) -> PoolAddresses:
        """The pool's SIP addresses, starting with host ``first``."""
        order = [HOSTS[(first + i) % len(HOSTS)] for i in range(len(HOSTS))]
        return PoolAddresses([(a, self.sip) for a in order], shuffle=False)

    async def client(self, user: str, addresses: PoolAddresses) -> PchatClient:
        return await addresses.signed_in(f"{user}@{DOMAIN}", PASSWORD)

    async def _port_of(self, key: str) -> int:
        """The port of the Redis that holds ``key``: the pool's own, or the cluster
        master that serves its slot now."""
        if self.cluster is None:
            return self.redis.port
        return await asyncio.to_thread(self.cluster.master_of, key.encode())

    async def owner_host(self, room_uri: str) -> int | None:
        """Index of the host whose worker holds the room's shard lease now."""
        shard = self.map.shard(room_uri.rpartition("/")[2])
        key = lease_key(shard)
        reader, writer = await asyncio.open_connection("127.0.0.1", await self._port_of(key))
        try:
            writer.write(f"*2\r\n$3\r\nGET\r\n${len(key)}\r\n{key}\r\n".encode())
            header = await reader.readline()
            if header.startswith(b"$-1"):
                return None
            value = (await reader.readline()).decode().strip()
        finally:
            writer.close()
        return int(value.split("/")[0]) // 1000 - 1

    async def stored(self, room_uri: str) -> list[tuple[int, str, int]]:
        """(seq, text, ts_ms) of the room's stored posts, straight from PostgreSQL."""
        import asyncpg

        conn = await asyncpg.connect(self.store_url)
        try:
            rows = await conn.fetch(
                "SELECT seq, text, ts_ms FROM messages WHERE room_id = $1 ORDER BY seq",
                room_uri.rpartition("/")[2],
            )
        finally:
            await conn.close()
        return [(int(r[0]), str(r[1]), int(r[2])) for r in rows]


async def bounded(body: Coroutine[Any, Any, None], seconds: float, what: str) -> None:
    """Runs a test's body within ``seconds``: on uvloop pytest-timeout cannot interrupt a
    test, so a hang must fail it here."""
    try:
        await asyncio.wait_for(body, seconds)
    except TimeoutError:
        pytest.fail(f"{what} did not finish within {seconds:.0f} s")
