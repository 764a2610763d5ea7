"""The coordinator: starts the server (or finds it), the load processes and the ceiling
writers, drives the phases of a profile, samples CPU and memory once a second, and hands
everything it saw to ``bench.load.analysis``."""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import msgspec

from bench.load.agent import AgentConfig, agent_main
from bench.load.ceiling import writer_main
from bench.load.population import Seating, new_password, populate, seat
from bench.load.profiles import Profile
from bench.load.server import (
    BenchServer,
    MachineProbe,
    ProcessProbe,
    free_port,
    read_pids,
    scrape,
)

SAMPLE_S = 1.0
REPLY_TIMEOUT_S = 120.0  # the load processes answer a control message within this
CEILING_BATCHES = (1, 8)


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """Where the server is; ``data_dir`` finds its worker pids, ``http_port`` its metrics."""

    host: str
    port: int
    domain: str
    data_dir: str | None = None
    http_port: int | None = None


class Coordinator:
    def __init__(self, profile: Profile, run_dir: Path, *, quiet: bool = False) -> None:
        self.profile = profile
        self.run_dir = run_dir
        self.quiet = quiet
        self.seating: Seating = seat(profile)
        # The users' password: made up for a server this run starts; a running server's is
        # read from the population's password file (cli.py sets it).
        self.password = new_password()
        self.server: BenchServer | None = None
        self.target: Target | None = None
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        self.ticks: dict[int, dict[str, Any]] = {}
        self.inbox: dict[str, dict[int, Any]] = {}
        self.samples: list[dict[str, float]] = []
        self.events: dict[str, float] = {}
        self.info: dict[str, Any] = {}
        self._server_probe: ProcessProbe | None = None
        self._agent_probe: ProcessProbe | None = None
        self._writer_probe: ProcessProbe | None = None
        self._machine = MachineProbe()
        self._next_sample = 0.0

    # -- the server -----------------------------------------------------------------------

    def start_server(
        self, domain: str, source: Path | None, env: dict[str, str], redis_cluster: bool = False
    ) -> None:
        data_dir = self.run_dir / "tmp" / "data"
        server = BenchServer(
            data_dir,
            self.profile.workers,
            domain,
            source=source,
            settings=env,
            redis_cluster=redis_cluster,
        )
        self.server = server
        data_dir.mkdir(parents=True, exist_ok=True)
        self.info["populate_s"] = round(
            asyncio.run(
                populate(server.store_url, domain, self.profile, self.seating, self.password)
            ),
            2,
        )
        server.start()
        self.target = Target(
            host="127.0.0.1",
            port=server.sip_port,
            domain=domain,
            data_dir=str(data_dir),
            http_port=server.http_port,
        )
        self.log(f"server: {self.profile.workers} workers on SIP {server.sip_port}")

    def use_server(self, target: Target) -> None:
        self.target = target

    def server_pids(self) -> list[int]:
        if self.target is None or self.target.data_dir is None:
            return []
        return read_pids(Path(self.target.data_dir))

    def counters(self) -> dict[str, float]:
        if self.target is None or self.target.http_port is None:
            return {}
        return scrape(self.target.http_port, self.target.host)

    # -- the load processes ---------------------------------------------------------------

    def agent_configs(self) -> list[AgentConfig]:
        assert self.target is not None
        p, t, s = self.profile, self.target, self.seating
        n = p.agent_count()
        loopback = t.host.startswith("127.") or t.host == "localhost"
        out = []
        for i in range(n):
            users = list(range(i, p.users, n))
            out.append(
                AgentConfig(
                    agent_id=i,
                    host=t.host,
                    port=t.port,
                    domain=t.domain,
                    password=self.password,
                    # Each process its own source address: 28k ephemeral ports apiece.
                    local_host=f"127.0.0.{2 + i}" if loopback else None,
                    users=users,
                    seats=[s.seats[u] for u in users],
                    rooms=self.room_uris(),
                    room_class=s.room_class,
                    signin_rate=p.signin_rate / n,
                    signin_concurrency=p.signin_concurrency,
                    signin_timeout_s=p.signin_timeout_s,
                    text_bytes=p.text_bytes,
                )  # fmt: skip
            )
        return out

    def room_uris(self) -> list[str]:
        assert self.target is not None
        return [f"ma-chan://{self.target.domain}/{r}" for r in self.seating.rooms]

    def start_agents(self) -> list[AgentConfig]:
        ctx = multiprocessing.get_context("spawn")
        configs = self.agent_configs()
        for cfg in configs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=agent_main, args=(msgspec.msgpack.encode(cfg), child))
            proc.daemon = True
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)
        self._agent_probe = ProcessProbe([p.pid for p in self.procs])
        self._server_probe = ProcessProbe(self.server_pids())
        return configs

    def send(self, message: tuple[Any, ...], agent: int | None = None) -> None:
        for i, pipe in enumerate(self.pipes):
            if agent is None or agent == i:
                pipe.send(message)

    def expect(
        self, kind: str, count: int | None = None, timeout_s: float = REPLY_TIMEOUT_S
    ) -> Any:
        """Pumps messages until ``count`` (default: every agent) sent ``kind``."""
        want = len(self.pipes) if count is None else count
        box = self.inbox.setdefault(kind, {})
        self.pump(lambda: len(box) >= want, timeout_s)
        if len(box) < want:
            raise RuntimeError(f"only {len(box)} of {want} load processes answered {kind!r}")
        self.inbox[kind] = {}
        return box

    def pump(self, done: Any, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            now = time.monotonic()
            if now >= self._next_sample:
                self.sample()
                self._next_sample = now + SAMPLE_S
            wait_s = max(0.0, min(self._next_sample, deadline) - time.monotonic())
            for conn in wait(self.pipes, timeout=wait_s):
                assert isinstance(conn, Connection)
                try:
                    message = conn.recv()
                except EOFError as exc:
                    raise RuntimeError("a load process died; see its output above") from exc
                self.on_message(message)

    def on_message(self, message: tuple[Any, ...]) -> None:
        kind, agent = message[0], message[1]
        if kind == "tick":
            self.ticks[agent] = message[2]
            return
        if kind == "signed_in":
            self.ticks[agent] = message[2]
        self.inbox.setdefault(kind, {})[agent] = message[2] if len(message) > 2 else None

    def total(self, name: str) -> float:
        return float(sum(t.get(name, 0) for t in self.ticks.values()))

    def sample(self) -> None:
        row: dict[str, float] = {"t": time.time()}
        for key in ("signed_in", "deliveries", "posts_ok", "retries_503", "in_flight", "errors"):
            row[key] = self.total(key)
        if self._server_probe is not None:
            row["server_cpu"], server_rss = self._server_probe.sample()
            row["server_rss_mb"] = server_rss / 2**20
        if self._agent_probe is not None:
            row["loadgen_cpu"], agent_rss = self._agent_probe.sample()
            row["loadgen_rss_mb"] = agent_rss / 2**20
        if self._writer_probe is not None:
            row["writer_cpu"] = self._writer_probe.sample()[0]
        row["machine_cpu"] = self._machine.sample()
        self.samples.append(row)
        if not self.quiet:
            self.log(
                f"signed in {row['signed_in']:.0f}  posts ok {row['posts_ok']:.0f}  "
                f"deliveries {row['deliveries']:.0f}  503 {row['retries_503']:.0f}  "
                f"errors {row['errors']:.0f}  server cpu {row.get('server_cpu', 0):.0f}%  "
                f"rss {row.get('server_rss_mb', 0):.0f} MB  loadgen cpu "
                f"{row.get('loadgen_cpu', 0):.0f}%  machine {row['machine_cpu']:.0f}%"
            )

    def log(self, text: str) -> None:
        if not self.quiet:
            print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    # -- phases ---------------------------------------------------------------------------

    def rates(self, configs: list[AgentConfig], scale: float) -> None:
        """Each process posts its share of every class's rate: its share of the seats."""
        p = self.profile
        seats: list[dict[str, int]] = []
        for cfg in configs:
            mine: dict[str, int] = {}
            for rooms in cfg.seats:
                for r in rooms:
                    mine[cfg.room_class[r]] = mine.get(cfg.room_class[r], 0) + 1
            seats.append(mine)
        for i, cfg in enumerate(configs):
            share = {}
            for c in p.rooms:
                total = sum(s.get(c.name, 0) for s in seats) or 1
                share[c.name] = c.post_rate * scale * seats[i].get(c.name, 0) / total
            joins = p.join_rate * len(cfg.users) / max(1, p.users)
            self.send(("rates", share, joins), agent=i)

    def run_phases(self) -> dict[str, Any]:
        """Every phase of the profile; the raw material for the analysis."""
        p = self.profile
        self.events["baseline"] = time.time()
        base_probe = ProcessProbe(self.server_pids())
        time.sleep(0.5)
        self.info["server_rss_before_mb"] = base_probe.sample()[1] / 2**20
        counters_before = self.counters()
        configs = self.start_agents()
        self.events["agents"] = time.time()
        signed = self.expect("signed_in", timeout_s=p.signin_timeout_s + 60)
        self.events["signed_in"] = time.time()
        self.log(f"signed in: {sum(t['signed_in'] for t in signed.values())} sessions")
        ramp: list[dict[str, float]] = []
        if p.mode == "steady":
            self.events["run"] = time.time()
            self.rates(configs, 1.0)
            self.pump(lambda: False, p.warmup_s + p.duration_s)
        elif p.mode == "ramp":
            self.events["run"] = time.time()
            ramp = self.ramp(configs)
        elif p.mode == "idle":
            self.pump(lambda: False, p.duration_s)
        self.events["stop"] = time.time()
        self.send(("stop", p.drain_s if p.mode in ("steady", "ramp") else 0.0))
        results = self.expect("result", timeout_s=p.drain_s + REPLY_TIMEOUT_S)
        self.events["results"] = time.time()
        counters_after = self.counters()
        self.send(("close",))
        self.expect("closed")
        return {
            "agents": [results[i] for i in sorted(results)],
            "ramp": ramp,
            "counters_before": counters_before,
            "counters_after": counters_after,
        }

    def ramp(self, configs: list[AgentConfig]) -> list[dict[str, float]]:
        r = self.profile.ramp
        per_post = max(1, self.profile.rooms[0].size - 1)
        rate, best, flat = r.start, 0.0, 0
        steps: list[dict[str, float]] = []
        for _ in range(r.max_steps):
            self.rates(configs, rate / self.profile.post_rate)
            start, before = time.time(), self.total("deliveries")
            self.pump(lambda: False, r.step_s)
            end, after = time.time(), self.total("deliveries")
            live = (after - before) / (end - start)
            steps.append({"posts_per_s": rate, "start": start, "end": end, "live_per_s": live})
            self.log(f"ramp: {rate:.0f} posts/s (~{rate * per_post:.0f} deliveries/s): {live:.0f}")
            if live > best * (1 + r.min_gain):
                best, flat = live, 0
            else:
                flat += 1
                if flat >= r.patience:
                    break
            rate *= r.factor
        return steps

    def ceiling(self, sessions: list[int], message_bytes: int) -> dict[str, Any]:
        """The raw writers against as many connections as the chat run had sessions."""
        ctx = multiprocessing.get_context("spawn")
        port = free_port()
        writers: list[tuple[Any, Connection]] = []
        for _ in range(self.profile.workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=writer_main, args=(port, child), daemon=True)
            proc.start()
            child.close()
            writers.append((proc, parent))
        try:
            return self._ceiling_runs(writers, port, sessions, message_bytes)
        finally:
            for proc, pipe in writers:
                pipe.send(("exit",))
                proc.join(10)
                if proc.is_alive():
                    proc.kill()

    def _ceiling_runs(
        self,
        writers: list[tuple[Any, Connection]],
        port: int,
        sessions: list[int],
        message_bytes: int,
    ) -> dict[str, Any]:
        for _, pipe in writers:
            if pipe.recv()[0] != "listening":
                raise RuntimeError("a ceiling writer did not start")
        for i, n in enumerate(sessions):
            self.send(("ceiling", "connect", "127.0.0.1", port, n), agent=i)
        connected = self.expect("ceiling_ready")
        self._server_probe = None  # the server is stopped; the writers are sampled instead
        self._writer_probe = ProcessProbe([proc.pid for proc, _ in writers])
        out: dict[str, Any] = {
            "connections": sum(connected.values()),
            "writers": len(writers),
            "message_bytes": message_bytes,
        }
        seconds = self.profile.ceiling_s
        for batch in CEILING_BATCHES:
            started = time.time()
            for _, pipe in writers:
                pipe.send(("go", message_bytes, batch, seconds))
            self.pump(lambda: False, seconds + 0.5)
            written = sum(pipe.recv()[1] for _, pipe in writers)
            self.send(("ceiling", "report"))
            received = self.expect("ceiling_bytes")
            out[f"batch_{batch}"] = {
                "started": started,
                "seconds": seconds,
                "written": written,
                "bytes_by_second": _sum_seconds(received.values()),
            }
            self.log(f"ceiling, {batch} per write: {written / seconds:.0f} messages/s written")
        self.send(("ceiling", "close"))
        self.expect("ceiling_closed")
        return out

    def shutdown(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("exit",))
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for proc in self.procs:
            # A process still signing in reads its pipe only afterwards: stop it instead.
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
        if self.server is not None:
            self.server.stop()


def _sum_seconds(parts: Any) -> dict[int, int]:
    out: dict[int, int] = {}
    for part in parts:
        for second, n in part.items():
            out[int(second)] = out.get(int(second), 0) + n
    return out
