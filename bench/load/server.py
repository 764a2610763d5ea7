"""The server under test: started here (private redis-server, fresh data dir) or found
running; its worker pids, CPU and memory (psutil), and a few of its own counters."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec

from shards.redis_server import EmbeddedRedis
from tests.redis_cluster import RedisClusterNodes

HEALTHY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
# Counters read from /metrics before and after a run, to check the generator's own counts.
SERVER_COUNTERS = (
    "pchat_rooms_posts_total",
    "pchat_fanout_deliveries_total",
    "pchat_admission_rejected_total",
    "pchat_sip_slow_consumer_disconnects_total",
    "pchat_supervisor_worker_restarts_total",
)
# Server-side latencies, to split the generator's post-to-delivery figure into its parts.
SERVER_HISTOGRAMS = (
    "pchat_store_commit_seconds",
    "pchat_fanout_delivery_latency_seconds",
    "pchat_redis_publish_seconds",
    "pchat_xccos_command_latency_seconds",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_pids(data_dir: Path) -> list[int]:
    """Worker pids from the supervisor's ``workers.pid`` ('worker pid' lines)."""
    path = data_dir / "workers.pid"
    if not path.exists():
        return []
    return [int(line.split()[1]) for line in path.read_text().splitlines() if line.strip()]


class PoolPlace(msgspec.Struct, frozen=True, kw_only=True):
    """A host of a pool (bench/pool_hosts.py): its own listen address, the ports every
    host uses, and the store and Redis the pool shares (started by the bench, not here)."""

    bind: str
    sip_port: int
    http_port: int
    store_url: str
    redis_url: str


class BenchServer:
    """``pchat serve --workers N`` on free ports with its own redis-server and data dir."""

    def __init__(
        self,
        data_dir: Path,
        workers: int,
        domain: str,
        *,
        source: Path | None = None,
        settings: dict[str, str] | None = None,
        redis_cluster: bool = False,
        pool: PoolPlace | None = None,
        file_service: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.domain = domain
        self.source = source  # run the server from this source tree (a clean export)
        self.settings = settings or {}  # extra PCHAT_* variables
        self.pool = pool
        self.bind = pool.bind if pool else "127.0.0.1"
        self.sip_port = pool.sip_port if pool else free_port()
        self.http_port = pool.http_port if pool else free_port()
        # The file service (shards/file_service.py), on a free port of its own or off, said
        # explicitly so that benches side by side never meet on its default port.
        self.file_service = file_service
        self.redis = EmbeddedRedis(str(data_dir / "redis.sock"), str(data_dir / "redis.log"))
        # --redis-cluster: the bus on a private Redis Cluster (3 masters, 3 replicas, sharded
        # pub/sub) instead of the one redis-server; a pool's host uses the pool's instead.
        self.redis_cluster = redis_cluster
        own_cluster = redis_cluster and pool is None
        self.cluster = RedisClusterNodes(data_dir / "redis-cluster") if own_cluster else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: object = None

    @property
    def store_url(self) -> str:
        if self.pool is not None:
            return self.pool.store_url
        return f"sqlite:///{self.data_dir.resolve() / 'chat.db'}"

    def start(self) -> None:
        self.launch()
        self.wait_healthy()

    def launch(self) -> None:
        """Starts the server (and its own Redis) without waiting for it: a pool's hosts
        start side by side."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.pool is not None:
            redis_args = ["--redis-url", self.pool.redis_url]
            redis_args += ["--redis-cluster"] if self.redis_cluster else []
        elif self.cluster is not None:
            self.cluster.start()
            redis_args = ["--redis-url", self.cluster.url, "--redis-cluster"]
        else:
            self.redis.start()
            redis_args = ["--redis-url", self.redis.url]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PCHAT_")}
        # Every load client comes from 127.0.0.1, where a deployment's come from many
        # addresses: the per-address cap on connections not yet signed in (64) would cut
        # a storm of 256 sign-ins in flight. --server-set can put it back. (Older trees
        # run with --server-src have no such cap, and would refuse the unknown setting.)
        if self.source is None or (self.source / "shards/worker/unauth.py").exists():
            env["PCHAT_LIMITS__UNAUTH_PER_ADDRESS"] = "0"
        if self.source is None or (self.source / "shards/file_service.py").exists():
            env["PCHAT_FILES__SERVICE_PORT"] = str(free_port()) if self.file_service else "-1"
        env.update(self.settings)
        env["PCHAT_LOG_LEVEL"] = env.get("PCHAT_LOG_LEVEL", "WARNING")
        cwd = None
        if self.source is not None:
            cwd = str(self.source)
            env["PYTHONPATH"] = str(self.source)
        # A pool's hosts listen on their own loopback address each, on the same ports.
        bind = ["--sip-host", self.bind, "--http-host", self.bind] if self.pool else []
        log = open(self.data_dir / "server.log", "wb")  # closed in stop()
        self._log = log
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "shards.cli", "serve",
                "--data-dir", str(self.data_dir.resolve()), "--store", self.store_url,
                "--sip-port", str(self.sip_port), "--http-port", str(self.http_port),
                "--workers", str(self.workers), "--domain", self.domain,
                *redis_args, *bind,
            ],
            env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + HEALTHY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"pchat serve exited; see {self.data_dir / 'server.log'}")
            if len(read_pids(self.data_dir)) == self.workers:
                try:
                    url = f"http://{self.bind}:{self.http_port}/healthz"
                    with urllib.request.urlopen(url, timeout=1) as response:
                        if response.status == 200:
                            return
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"pchat serve not healthy; see {self.data_dir / 'server.log'}")

    def pids(self) -> list[int]:
        return read_pids(self.data_dir)

    def all_pids(self) -> list[int]:
        """The supervisor's and its workers'."""
        return ([self.proc.pid] if self.proc is not None else []) + self.pids()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.redis.stop()
        if self.cluster is not None:
            self.cluster.stop()
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None


class ProcessProbe:
    """CPU (% of one core) and RSS of a set of processes, sampled by the coordinator."""

    def __init__(self, pids: list[int]) -> None:
        self._procs: list[Any] = []
        try:
            import psutil  # type: ignore[import-untyped]
        except ImportError:  # the bench extra is not installed: no CPU or memory figures
            self._error: type[Exception] = Exception
            return
        self._error = psutil.Error
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                proc.cpu_percent(None)  # the first call only starts the interval
                self._procs.append(proc)
            except psutil.Error:
                continue

    def sample(self) -> tuple[float, int]:
        """(CPU % summed over the processes since the last sample, RSS bytes summed)."""
        cpu = 0.0
        rss = 0
        for proc in self._procs:
            try:
                cpu += proc.cpu_percent(None)
                rss += proc.memory_info().rss
            except self._error:
                continue
        return cpu, rss


class MachineProbe:
    """CPU busy on the whole machine, in % of one core (200 % = both cores of two), so
    another job sharing the host shows as machine minus server minus load generator."""

    def __init__(self) -> None:
        try:
            import psutil
        except ImportError:
            self._psutil: Any = None
            return
        self._psutil = psutil
        psutil.cpu_percent(None)

    def sample(self) -> float:
        if self._psutil is None:
            return 0.0
        return float(self._psutil.cpu_percent(None)) * (os.cpu_count() or 1)


def scrape(
    http_port: int, host: str = "127.0.0.1", histograms: tuple[str, ...] = SERVER_HISTOGRAMS
) -> dict[str, float]:
    """SERVER_COUNTERS (label children summed) and the buckets of ``histograms`` as
    ``name{le}`` keys, from /metrics; {} when unreachable."""
    try:
        url = f"http://{host}:{http_port}/metrics"
        with urllib.request.urlopen(url, timeout=3) as response:
            text = response.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        value = float(line.rsplit(" ", 1)[1])
        if name in SERVER_COUNTERS:
            out[name] = out.get(name, 0.0) + value
        elif name.endswith("_bucket") and name[: -len("_bucket")] in histograms:
            labels = line[line.index("{") + 1 : line.rindex("}")]
            if 'command="' in labels and 'command="grpchat"' not in labels:
                continue  # of the command latencies, only the post's
            le = labels.split('le="', 1)[1].split('"', 1)[0]
            key = f"{name[: -len('_bucket')]}{{{le}}}"
            out[key] = out.get(key, 0.0) + value
    return out


def histogram_quantiles(
    before: dict[str, float], after: dict[str, float], name: str, points: tuple[float, ...]
) -> dict[str, float | None]:
    """Quantiles (ms) of what a server histogram saw between two scrapes, interpolated
    within buckets as Prometheus' histogram_quantile does."""
    prefix = name + "{"
    buckets = sorted(
        (
            math.inf if key[len(prefix) : -1] == "+Inf" else float(key[len(prefix) : -1]),
            n - before.get(key, 0.0),
        )
        for key, n in after.items()
        if key.startswith(prefix)
    )
    total = buckets[-1][1] if buckets else 0.0
    out: dict[str, float | None] = {}
    for p in points:
        key = f"p{p:g}"
        out[key] = None
        if not total:
            continue
        rank, low, seen = p / 100 * total, 0.0, 0.0
        for le, count in buckets:
            if count >= rank:
                if le == math.inf:
                    out[key] = round(low * 1000, 3)
                else:
                    share = (rank - seen) / (count - seen) if count > seen else 1.0
                    out[key] = round((low + (le - low) * share) * 1000, 3)
                break
            low, seen = le, count
    return out
