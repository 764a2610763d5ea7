"""The pool's cross-host path against the single-host path: CPU per delivery and latency
with 1, 2 and 3 hosts on one box, in one run.

    python -m bench.pool_hosts [--hosts 1,2,3] [--duration 15] [--workers-per-host 1]
                               [--cluster] [--rate 50]

Each configuration is a fresh pool: a new PostgreSQL database (dropped afterwards), a new
private redis-server (or, with --cluster, also a private Redis Cluster of 3 masters + 3
replicas for a second row per host count), and 1, 2 or 3 `pchat serve` supervisors bound
to 127.0.0.2, .3 and .4 with host_id 1, 2, 3. Once every shard sits where the placement
wants it, the fanout-10k load (1,000 sessions, 5 rooms of 200, 50 posts/s: ~10,000
deliveries/s) runs from 6 load processes, process i signed in to host i % hosts, so each
room's members (and posters) are spread evenly over the hosts and most deliveries cross
a host. The 1-host row on one Redis is measured first and again last: the ratios are
against the mean of the two, and their difference is the drift of the box meanwhile.

Per row: deliveries/s, latency p50/p99/p99.9, pchat CPU per delivery (every host's
supervisor and workers, process CPU time over the measured window), Redis and PostgreSQL
CPU (this run's database's backends) per delivery, and the load generator's. Writes
bench/results/<stamp>-pool-hosts/result.json and summary.md, each row's full bench.load
result beside them. Two shared cores cannot show a pool scaling out: this shows what the
cross-host path costs, on the same box, in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import psutil  # type: ignore[import-untyped]

from bench.load import cli, report
from bench.load.analysis import analyse
from bench.load.coordinator import Coordinator, Target
from bench.load.population import populate
from bench.load.server import BenchServer, PoolPlace, free_port, scrape
from bench.pool_figures import (
    ADDRESSES,
    AGENTS,
    RATIO_KEYS,
    Config,
    baseline_of,
    cpu_percent,
    misplaced,
    parse_hosts,
    per_delivery_us,
    plan,
    ratios,
    remote_share,
    summary_md,
    window_delta,
)  # fmt: skip
from core.config import Settings
from shards.leases import RedisLeases
from shards.placement import host_of
from shards.redis_clients import redis_client
from shards.routing import ShardMap
from tests.redis_cluster import RedisClusterNodes, RedisServer

DOMAIN = "example.com"
SETTLE_TIMEOUT_S = 90.0  # a join moves 64 shards per worker per 0.5 s round: ~10 s here
SHARDS = Settings().shards
# Sign-ins in flight per load process: fanout-10k's 64 x 6 processes ran past the client's
# 10 s timeout on a loaded box (each sign-in on PostgreSQL is slower than on SQLite), and
# a session that failed to sign in is missing from its rooms' fan-out.
SIGNIN_CONCURRENCY = 16


class CpuMeter:
    """CPU seconds used by a changing set of processes. A process's last reading is kept
    after it exits, so the total never goes backwards."""

    def __init__(self) -> None:
        self._procs: dict[int, Any] = {}
        self._last: dict[int, float] = {}

    def read(self, pids: Iterable[int]) -> float:
        for pid in pids:
            try:
                proc = self._procs.get(pid) or self._procs.setdefault(pid, psutil.Process(pid))
                times = proc.cpu_times()
                self._last[pid] = times.user + times.system
            except psutil.Error:
                continue
        return sum(self._last.values())


def postgres_backends(database: str) -> list[int]:
    """The PostgreSQL server processes serving ``database``: their title names it."""
    out = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        title = (proc.info["cmdline"] or [""])[0]
        if proc.info["name"] == "postgres" and f" {database} " in title:
            out.append(proc.pid)
    return out


class Database:
    """A fresh PostgreSQL database for one configuration, dropped afterwards."""

    def __init__(self) -> None:
        self.name = f"pchat_poolbench_{secrets.token_hex(6)}"
        self.url = ""

    def create(self) -> None:
        dsn = asyncio.run(self._admin(f'CREATE DATABASE "{self.name}"'))
        self.url = urlsplit(dsn)._replace(path=f"/{self.name}").geturl()

    def drop(self) -> None:
        if self.url:
            asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))

    @staticmethod
    async def _admin(sql: str) -> str:
        import pytest

        from tests.integration.conftest import _pg_admin

        try:
            admin, dsn = await _pg_admin()  # the tests' admin DSNs (PCHAT_TEST_POSTGRES)
        except pytest.skip.Exception as exc:
            raise SystemExit(f"bench.pool_hosts needs PostgreSQL: {exc.msg}") from None
        try:
            await admin.execute(sql)
        finally:
            await admin.close()
        return str(dsn)


class PoolCoordinator(Coordinator):
    """bench.load's coordinator driving a pool: its hosts started here, load process i on
    host i % hosts, the CPU of pchat, Redis and PostgreSQL read at every sample."""

    def __init__(self, profile: Any, run_dir: Path, config: Config, args: argparse.Namespace):
        super().__init__(profile, run_dir, quiet=args.quiet)
        self.config = config
        self.args = args
        self.db = Database()
        self.redis = RedisServer(run_dir / "tmp" / "redis") if not config.cluster else None
        self.nodes = RedisClusterNodes(run_dir / "tmp" / "cluster") if config.cluster else None
        self.hosts: list[BenchServer] = []
        self.meters = {who: CpuMeter() for who in ("pchat", "redis", "postgres")}
        self.owners: list[int] = []  # host (1..) owning each bench room

    @property
    def leased(self) -> bool:
        return Settings(workers=self.args.workers_per_host, pool_hosts=self.config.hosts).leased

    def start_pool(self) -> None:
        self.db.create()
        self.info["populate_s"] = round(
            asyncio.run(populate(self.db.url, DOMAIN, self.profile, self.seating, self.password)), 2
        )
        if self.nodes is not None:
            self.nodes.start()
        elif self.redis is not None:
            self.redis.start()
        redis_url = self.nodes.url if self.nodes is not None else self.redis_url()
        sip, http = free_port(), free_port()
        for i in range(self.config.hosts):
            place = PoolPlace(
                bind=ADDRESSES[i], sip_port=sip, http_port=http, store_url=self.db.url,
                redis_url=redis_url,
            )  # fmt: skip
            env = {"PCHAT_POOL_HOSTS": str(self.config.hosts), "PCHAT_LEASES__HOST_ID": str(i + 1)}
            self.hosts.append(
                BenchServer(
                    self.run_dir / "tmp" / f"host{i + 1}",
                    self.args.workers_per_host,
                    DOMAIN,
                    source=self.args.server_src,
                    settings=env,
                    redis_cluster=self.config.cluster,
                    pool=place,
                )  # fmt: skip
            )
        for host in self.hosts:
            host.data_dir.mkdir(mode=0o700, parents=True)  # the supervisor wants it private
            host.launch()
        for host in self.hosts:
            host.wait_healthy()
        self.owners = asyncio.run(self._settle(redis_url))
        self.target = Target(host=ADDRESSES[0], port=sip, domain=DOMAIN, http_port=http)
        self.log(f"{self.config.label}: settled; rooms owned by hosts {self.owners}")

    def redis_url(self) -> str:
        assert self.redis is not None
        return self.redis.url

    async def _settle(self, redis_url: str) -> list[int]:
        """Waits until every shard is held where the placement wants it (no handover left
        to disturb the measured window); returns each bench room's owning host."""
        rooms = ShardMap(shards=SHARDS, workers=self.args.workers_per_host, domain=DOMAIN)
        shards = [rooms.shard(r) for r in self.seating.rooms]
        if not self.leased:
            return [1 for _ in shards]
        settings = Settings(redis_url=redis_url, redis_cluster=self.config.cluster)
        client = redis_client(settings, socket_timeout=2)
        leases = RedisLeases(client, timeout_s=5.0)
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        try:
            while True:
                holders = await leases.holders(range(SHARDS))
                left = misplaced(holders, self.config.hosts, self.args.workers_per_host)
                if not left:
                    return [host_of(int(str(holders[s]).split("/")[0])) for s in shards]
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{left} shards still misplaced after {SETTLE_TIMEOUT_S} s")
                await asyncio.sleep(0.3)
        finally:
            await client.aclose()

    def agent_configs(self) -> list[Any]:
        return [
            msgspec.structs.replace(cfg, host=ADDRESSES[cfg.agent_id % self.config.hosts])
            for cfg in super().agent_configs()
        ]

    def server_pids(self) -> list[int]:
        return [pid for host in self.hosts for pid in host.all_pids()]

    def redis_pids(self) -> list[int]:
        if self.nodes is not None:
            return [proc.pid for proc in self.nodes.procs.values()]
        return [self.redis.proc.pid] if self.redis is not None and self.redis.proc else []

    def counters(self) -> dict[str, float]:
        """Every host's counters and histogram buckets, summed."""
        out: dict[str, float] = {}
        assert self.target is not None and self.target.http_port is not None
        for address in ADDRESSES[: self.config.hosts]:
            for key, value in scrape(self.target.http_port, address).items():
                out[key] = out.get(key, 0.0) + value
        return out

    def sample(self) -> None:
        super().sample()
        row = self.samples[-1]
        row["pchat_cpu_s"] = self.meters["pchat"].read(self.server_pids())
        row["redis_cpu_s"] = self.meters["redis"].read(self.redis_pids())
        row["postgres_cpu_s"] = self.meters["postgres"].read(postgres_backends(self.db.name))

    def shutdown(self) -> None:
        super().shutdown()  # the load processes
        with ThreadPoolExecutor(max(1, len(self.hosts))) as pool:
            list(pool.map(BenchServer.stop, self.hosts))  # side by side: a drain each
        for host in self.hosts:
            log = host.data_dir / "server.log"
            if log.exists() and log.stat().st_size:
                shutil.copy(log, self.run_dir / f"{host.data_dir.name}-server.log")
        if self.nodes is not None:
            self.nodes.stop()
        if self.redis is not None:
            self.redis.stop()
        self.db.drop()
        shutil.rmtree(self.run_dir / "tmp", ignore_errors=True)


def profile_for(args: argparse.Namespace) -> Any:
    """fanout-10k with this bench's duration, rate, workers and load processes."""
    argv = [
        "--profile", "fanout-10k", "--duration", str(args.duration), "--rate", str(args.rate),
        "--agents", str(AGENTS), "--workers", str(args.workers_per_host), "--ceiling", "0",
        "--signin-concurrency", str(SIGNIN_CONCURRENCY),
    ]  # fmt: skip
    return cli.profile_from(cli.parser().parse_args(argv))


def run_row(config: Config, args: argparse.Namespace, out: Path, index: int) -> dict[str, Any]:
    profile = profile_for(args)
    run_dir = out / f"{index}-{config.slug}"
    started = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": report.host()}
    coord = PoolCoordinator(profile, run_dir, config, args)
    try:
        coord.start_pool()
        raw = coord.run_phases()
    finally:
        coord.shutdown()
    result = analyse(profile, raw, coord.events, coord.samples, coord.info, None)
    redis = "a Redis Cluster, 3+3 nodes" if config.cluster else "one redis-server"
    server = (
        f"{config.hosts} x pchat serve --workers {args.workers_per_host} (one PostgreSQL"
        f" database, {redis})"
    )
    source = args.server_src or report.REPO
    meta = {
        "run": run_dir.name,
        **started,
        "profile": msgspec.to_builtins(profile),
        "settings": {
            "server": server,
            "server_source": {"path": str(source), **report.git_state(source)},
            "agents": profile.agent_count(),
            "populate_s": coord.info.get("populate_s"),
        },
        "git": report.git_state(),
        "versions": report.versions(),
        "loop": "uvloop",
    }
    report.write(run_dir, {**meta, **result}, plots=False, runs_log=out / "runs.jsonl")
    return summarize(config, {**meta, **result}, coord, profile)


def summarize(
    config: Config, result: dict[str, Any], coord: PoolCoordinator, profile: Any
) -> dict[str, Any]:
    start, end = coord.events["run"] + profile.warmup_s, coord.events["stop"]
    rate = result["deliveries"]["per_s"]
    latency = result["deliveries"]["latency_ms"]
    row: dict[str, Any] = {
        "config": config.label,
        "hosts": config.hosts,
        "cluster": config.cluster,
        "loadavg_at_start": result.get("host", {}).get("loadavg_at_start"),
        "sessions": result["sessions"],
        "errors_total": sum(result["errors"].values()),
        "deliveries_per_s": rate,
        "posts_accepted_per_s": result["posts"]["accepted_per_s"],
        "p50_ms": latency["p50"],
        "p99_ms": latency["p99"],
        "p99.9_ms": latency["p99.9"],
    }
    for who in ("pchat", "redis", "postgres"):
        cpu_s, seconds = window_delta(coord.samples, start, end, f"{who}_cpu_s")
        row[f"{who}_cpu_percent"] = cpu_percent(cpu_s, seconds)
        row[f"{who}_us_per_delivery"] = per_delivery_us(cpu_s, seconds, rate)
    row["loadgen_us_per_delivery"] = result["cost"].get("loadgen_us_per_delivery")
    row["others_cpu_percent"] = result["machine"]["others_cpu_percent_mean"]
    server = result["server"]
    if server.get("rss_mb_end") and server.get("rss_mb_before") is not None and result["sessions"]:
        grown = server["rss_mb_end"] - server["rss_mb_before"]
        row["pchat_kb_per_session"] = round(grown * 1024 / result["sessions"], 1)
    row["rooms_owned_by_host"] = coord.owners
    host_of_user = [(u % AGENTS) % config.hosts + 1 for u in range(profile.users)]
    row["remote_share"] = remote_share(coord.seating.seats, host_of_user, coord.owners)
    row["retries_503"] = result["posts"]["retries_503"]
    row["errors"] = result["errors"]
    return row


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.pool_hosts", description=__doc__.splitlines()[0]
    )
    p.add_argument("--hosts", type=parse_hosts, default=[1, 2, 3], help="host counts, e.g. 1,2,3")
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds per row")
    p.add_argument("--workers-per-host", type=int, default=1, help="pchat workers per host")
    p.add_argument("--cluster", action="store_true", help="also each host count on a Redis Cluster")
    p.add_argument("--rate", type=float, default=10_000 / 199, help="posts/s (x199 deliveries)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    report.add_run_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.workers_per_host < 1:
        raise SystemExit("--workers-per-host must be >= 1")
    out = report.named_dir(args, "pool-hosts").resolve()
    host = report.host()
    rows = []
    for i, config in enumerate(plan(args.hosts, args.cluster)):
        print(f"[pool_hosts {time.strftime('%H:%M:%S')}] {i + 1}: {config.label}", file=sys.stderr)
        rows.append(run_row(config, args, out, i + 1))
    base = baseline_of(rows)
    for row in rows:
        row["ratios"] = ratios(row, base)
    first, last = rows[0], rows[-1]
    result = {
        "stamp": out.name,
        "command": "python -m bench.pool_hosts "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "git": report.git_state(),
        "versions": report.versions(),
        "cores": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in host["loadavg_at_start"]],
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "workers_per_host": args.workers_per_host,
        "duration_s": args.duration,
        "rate_posts_per_s": round(args.rate, 2),
        "agents": AGENTS,
        "rows": rows,
        "baseline": base,
        "baseline_drift": ratios(last, {k: first.get(k) for k in RATIO_KEYS}),
        "note": "One run on a 2-core box shared with other jobs: two cores cannot show a pool"
        " scaling out, only what its cross-host path costs; compare the ratios within this run.",
    }
    report.write_small(out, result)
    (out / "summary.md").write_text(summary_md(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
