"""File transfers beside chat: upload and download throughput of 1 MB and 20 MB files
while chat traffic runs, and whether the chat round trip's p99 moves by more than 10 %.

    python -m bench.files [--order cffc] [--rounds 3] [--phase-seconds 5] [--sizes-mb 1,20]
                          [--parallel 2] [--workers 2] [--limit 1.10] [--server-src DIR]
                          [--server-env PCHAT_X=V] [--file-service on|off] [--keep-data]

`pchat serve --workers 2` (fresh data dir, private redis-server, no room quota). A probe
pair of users posts in one room and times each post to its delivery (one every 20 ms),
through interleaved phases of --phase-seconds: calm (c, chat alone) and files (f, while
--parallel loops in another process upload a file of each size in turn to another room
and download it back), --order repeated --rounds times (3 x "cffc": about 70 s). The
transfers go to the fileServiceUrl the server hands out in rpl:getservinfo (HTTP Basic).

Reported: the chat round trip pooled per condition (p50, p99), the p99 ratio files / calm
with a 95 % interval from resampling whole phases, and the verdict against --limit (met:
the whole interval within it; missed: the whole interval above it; else unresolved), see
bench/phase_stats.py; per phase the p99s; MB/s per size and direction (the median over
the transfers, and the total bytes over the time spent); per condition the CPU by who
spent it and the server's own loop lag and delivery latency. One host over loopback: the
transfers' client shares the CPUs with the server, so only ratios within one run mean much.
The data folder is removed at the end (--keep-data keeps it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]
import uvloop

from bench import phase_stats
from bench.load import report
from bench.load.server import BenchServer, histogram_quantiles, scrape
from client.client import PchatClient

DOMAIN = "example.com"
PASSWORD = "bench-pw"
PROBE_EVERY_S = 0.02  # 50 posts/s: about 250 samples per 5 s phase, 1500 per condition
TRANSFER_TIMEOUT_S = 300.0  # a 20 MB transfer on a loaded host takes seconds, never minutes
JOIN_TIMEOUT_S = 30.0  # the transfer process's start-up and its last transfers' tail
# The server's own view of each phase (summed over the processes), read from /metrics: how
# late the loops' 10 Hz timer fired, and post-to-delivery inside the server, so that a
# slower round trip can be told apart from the probe's own process waiting for a CPU.
LOOP_LAG = "pchat_worker_loop_lag_seconds"
DELIVERY = "pchat_fanout_delivery_latency_seconds"
COMMAND = "pchat_xccos_command_latency_seconds"  # of the grpchat posts only (see scrape)
CPU_KEYS = ("server", "probe_client", "redis_and_helpers")


def _admin(server: BenchServer, *args: str) -> str:
    cmd = [sys.executable, "-m", "shards.cli", "admin", *args]
    cmd += ["--data-dir", str(server.data_dir.resolve()), "--store", server.store_url]
    cmd += ["--redis-url", server.redis.url, "--domain", DOMAIN]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


async def _transfer_loop(
    http: aiohttp.ClientSession,
    upload_url: str,
    blobs: list[bytes],
    end: float,
    out: dict[str, Any],
) -> None:
    basic = base64.b64encode(f"carl@{DOMAIN}:{PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}"}
    i = 0
    while time.monotonic() < end:
        data = blobs[i % len(blobs)]
        i += 1
        key = f"{len(data) / 1e6:g}MB"
        start = time.monotonic()
        async with http.post(upload_url, params={"name": "b.bin"}, data=data, headers=headers) as r:
            body = await r.json(content_type=None)
            if r.status != 201:
                out.setdefault("errors", []).append(f"upload {r.status}: {body}")
                return
        up = time.monotonic() - start
        start = time.monotonic()
        async with http.get(body["url"], headers=headers) as r:
            got = 0
            async for chunk in r.content.iter_chunked(1 << 16):
                got += len(chunk)
        down = time.monotonic() - start
        if got != len(data):
            out.setdefault("errors", []).append(f"download {r.status}: {got} of {len(data)} B")
            return
        out.setdefault(f"upload_{key}", []).append((len(data), up))
        out.setdefault(f"download_{key}", []).append((len(data), down))


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _mover(upload_url: str, sizes: list[int], parallel: int, pipe: Any) -> None:
    """Waits for a phase's length on ``pipe``, says "ready", runs the loops that long
    (the last transfers finish after it), sends their results; None ends it."""
    blobs = [os.urandom(size) for size in sizes]
    timeout = aiohttp.ClientTimeout(total=TRANSFER_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while (seconds := await asyncio.to_thread(pipe.recv)) is not None:
            out: dict[str, Any] = {}
            pipe.send("ready")
            cpu_at_start = _own_cpu_s()
            end = time.monotonic() + seconds
            loops = (
                _transfer_loop(http, upload_url, blobs[n:] + blobs[:n], end, out)
                for n in range(parallel)
            )
            await asyncio.gather(*loops)
            out["cpu_s"] = _own_cpu_s() - cpu_at_start
            pipe.send(out)


def _transfer_process(
    upload_url: str, sizes: list[int], parallel: int, pipe: Any, nice: int
) -> None:
    """Transfers run in a process of their own, so the probe's timings are the server's.
    ``nice``: the uploaders and downloaders stand for other machines, which on this host
    share the server's cores; a lower priority leaves the cores to the server first."""
    if nice:
        os.nice(nice)
    uvloop.run(_mover(upload_url, sizes, parallel, pipe))


async def _probe(
    sender: PchatClient, reader: PchatClient, room: str, seconds: float
) -> list[float]:
    trips: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        await sender.post(room, f"probe {start}")
        while (await reader.next_post(timeout=30)).text != f"probe {start}":
            pass
        trips.append((time.monotonic() - start) * 1000)
        await asyncio.sleep(PROBE_EVERY_S)
    return trips


def _throughput(samples: list[tuple[int, float]]) -> dict[str, float]:
    rates = [size / secs / 1e6 for size, secs in samples if secs > 0]
    total = sum(size for size, _ in samples) / max(sum(s for _, s in samples), 1e-9) / 1e6
    return {
        "transfers": len(samples),
        "median_mb_s": round(statistics.median(rates), 1) if rates else 0.0,
        "total_mb_s": round(total, 1),
    }


class _Meter:
    """CPU seconds by who spent them and the server's histograms, read at each phase's
    bounds and summed per condition (in % of one core: 200 % is both cores of two). The
    host is shared, so "others" (the host's busy time less this bench's processes) says
    how much of a condition's figures is someone else."""

    def __init__(self, server: BenchServer) -> None:
        self._server = server
        self._me = psutil.Process()

    def _cpu(self, procs: list[Any]) -> dict[int, float]:
        out: dict[int, float] = {}
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue  # gone between the listing and the read
            out[proc.pid] = times.user + times.system
        return out

    def read(self, skip: int) -> dict[str, Any]:
        """A snapshot; ``skip``: the transfer process's pid (it counts its own CPU)."""
        assert self._server.proc is not None
        top = psutil.Process(self._server.proc.pid)
        tree = [top, *top.children(recursive=True)]  # the supervisor and its children
        ours = {p.pid for p in tree} | {skip}
        helpers = [p for p in self._me.children(recursive=True) if p.pid not in ours]
        host = psutil.cpu_times()
        busy = host.user + host.nice + host.system + host.irq + host.softirq + host.steal
        return {
            "t": time.monotonic(),
            "server": self._cpu(tree),
            "probe_client": self._cpu([self._me]),
            "redis_and_helpers": self._cpu(helpers),  # redis-server, multiprocessing's tracker
            "host_busy": busy,
            "metrics": scrape(self._server.http_port, histograms=(LOOP_LAG, DELIVERY, COMMAND)),
        }

    @staticmethod
    def condition(spans: list[tuple[dict[str, Any], dict[str, Any], float]]) -> dict[str, Any]:
        """The sum over a condition's phases: (snapshot before, after, transfer CPU s)."""
        wall = max(sum(b["t"] - a["t"] for a, b, _ in spans), 1e-9)
        spent = {
            k: sum(s - a[k].get(pid, 0.0) for a, b, _ in spans for pid, s in b[k].items())
            for k in CPU_KEYS
        }
        spent["transfer_client"] = sum(cpu for _, _, cpu in spans)
        host = sum(b["host_busy"] - a["host_busy"] for a, b, _ in spans)
        spent["others_on_host"] = max(host - sum(spent.values()), 0.0)
        cpu = {k: round(100 * v / wall, 1) for k, v in spent.items()}
        cpu["host_busy"] = round(100 * host / wall, 1)
        seen: dict[str, float] = {}
        for a, b, _ in spans:
            for key, n in b["metrics"].items():
                seen[key] = seen.get(key, 0.0) + n - a["metrics"].get(key, 0.0)
        return {
            "seconds": round(wall, 1),
            "cpu_pct_of_one_core": cpu,
            "server_loop_lag_ms": histogram_quantiles({}, seen, LOOP_LAG, (50.0, 99.0)),
            "server_delivery_ms": histogram_quantiles({}, seen, DELIVERY, (50.0, 99.0)),
            "server_grpchat_ms": histogram_quantiles({}, seen, COMMAND, (50.0, 99.0)),
        }


def _chat(phases: list[list[float]]) -> dict[str, Any]:
    pooled = [v for phase in phases for v in phase]
    return {
        "phases": len(phases),
        "posts": len(pooled),
        "p50_ms": round(phase_stats.quantile(pooled, 0.5), 2),
        "p99_ms": round(phase_stats.quantile(pooled, 0.99), 2),
        "p99_ms_per_phase": [round(phase_stats.quantile(p, 0.99), 2) for p in phases],
    }


async def _file_service_url(client: PchatClient) -> str:
    """The fileServiceUrl of rpl:getservinfo: where clients upload (main or file service)."""
    reply = await client.command("cmd:getserverinfo", f'<sib domain="{DOMAIN}" infoType="123"/>')
    sib = reply.data.find("sib") if reply.data is not None else None
    base = sib.get("fileServiceUrl", "") if sib is not None else ""
    if not base:
        raise RuntimeError("the server offers no file service")
    return base.rstrip("/")


async def _phases(
    args: argparse.Namespace, server: BenchServer, sender: PchatClient, reader: PchatClient
) -> dict[str, Any]:
    """Runs the schedule; the chat samples, meter spans and transfers of each condition."""
    chat = await _admin_room(server, "Chat", sender, reader)
    drop = _admin(server, "room", "add", "Drop", "--category", "Bench", "--privacy", "open")
    upload_url = f"{await _file_service_url(sender)}/rooms/{drop.rpartition('/')[2]}/files"
    sizes = [int(float(mb) * 1e6) for mb in args.sizes_mb.split(",")]
    pipe, theirs = multiprocessing.Pipe()
    job = (upload_url, sizes, args.parallel, theirs, args.mover_nice)
    mover = multiprocessing.get_context("spawn").Process(target=_transfer_process, args=job)
    mover.start()
    await _probe(sender, reader, chat, 1.0)  # warm-up: connections, caches, the room loaded
    meter = _Meter(server)
    samples: dict[str, list[list[float]]] = {"c": [], "f": []}
    spans: dict[str, list[tuple[dict[str, Any], dict[str, Any], float]]] = {"c": [], "f": []}
    moved: dict[str, Any] = {"errors": []}
    try:
        for phase in phase_stats.schedule(args.order, args.rounds):
            moved_cpu = 0.0
            if phase == "f":
                pipe.send(args.phase_seconds)
                assert await asyncio.to_thread(pipe.recv) == "ready"
            before = meter.read(skip=mover.pid or 0)
            samples[phase].append(await _probe(sender, reader, chat, args.phase_seconds))
            if phase == "f":  # the phase ends when its last transfers have
                out = await asyncio.to_thread(pipe.recv)
                moved_cpu = out.pop("cpu_s")
                for key, values in out.items():
                    moved.setdefault(key, []).extend(values)
            spans[phase].append((before, meter.read(skip=mover.pid or 0), moved_cpu))
    finally:
        with contextlib.suppress(OSError):  # a mover that died has closed its end
            pipe.send(None)
        await asyncio.to_thread(mover.join, JOIN_TIMEOUT_S)
    return {"samples": samples, "spans": spans, "moved": moved, "upload_url": upload_url}


async def _admin_room(
    server: BenchServer, name: str, sender: PchatClient, reader: PchatClient
) -> str:
    room = _admin(server, "room", "add", name, "--category", "Bench", "--privacy", "open")
    for c in (sender, reader):
        await c.join(room)
    return room


async def _run(args: argparse.Namespace, server: BenchServer) -> dict[str, object]:
    load_at_start = [round(x, 2) for x in os.getloadavg()]  # others' jobs on the host
    for name in ("ann", "ben", "carl"):
        _admin(server, "user", "add", f"{name}@{DOMAIN}", "--password", PASSWORD)
    _admin(server, "category", "add", "Bench")
    sender, reader = [
        await PchatClient.connect("127.0.0.1", server.sip_port, f"{n}@{DOMAIN}", PASSWORD)
        for n in ("ann", "ben")
    ]
    for c in (sender, reader):
        await c.sign_in()
    try:
        ran = await _phases(args, server, sender, reader)
    finally:
        for c in (sender, reader):
            await c.close()
    calm, files = ran["samples"]["c"], ran["samples"]["f"]
    point, low, high = phase_stats.bootstrap_ratio(files, calm, 0.99)
    p50, p50_low, p50_high = phase_stats.bootstrap_ratio(files, calm, 0.5)
    moved = ran["moved"]
    return {
        "workers": args.workers,
        "parallel_transfers": args.parallel,
        "mover_nice": args.mover_nice,
        "order": args.order,
        "rounds": args.rounds,
        "phase_seconds": args.phase_seconds,
        "upload_url": ran["upload_url"],
        "chat": {"calm": _chat(calm), "with_files": _chat(files)},
        "p99_ratio": round(point, 3),
        "p99_ratio_95": [round(low, 3), round(high, 3)],
        "p50_ratio": round(p50, 3),
        "p50_ratio_95": [round(p50_low, 3), round(p50_high, 3)],
        "limit": args.limit,
        "verdict": phase_stats.verdict(low, high, args.limit),
        "load_average_at_start": load_at_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "conditions": {
            "calm": _Meter.condition(ran["spans"]["c"]),
            "with_files": _Meter.condition(ran["spans"]["f"]),
        },
        "transfers": {k: _throughput(v) for k, v in sorted(moved.items()) if k != "errors"},
        "errors": moved["errors"],
        "samples_ms": {
            "calm": [[round(v, 3) for v in p] for p in calm],
            "with_files": [[round(v, 3) for v in p] for p in files],
        },  # the bootstrap can be redone from these
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--order", default="cffc", help="one round's phases: c calm, f files")
    p.add_argument("--rounds", type=int, default=3, help="how often --order runs")
    p.add_argument("--phase-seconds", type=float, default=5.0, help="length of one phase")
    p.add_argument("--limit", type=float, default=1.10, help="p99 ratio the target allows")
    p.add_argument("--sizes-mb", default="1,20", help="file sizes, comma-separated MB (10^6)")
    p.add_argument("--parallel", type=int, default=2, help="transfer loops at once")
    p.add_argument("--workers", type=int, default=2, help="server worker processes")
    p.add_argument(
        "--mover-nice",
        type=int,
        default=0,
        help="niceness of the transfer client (it stands for other machines; 0: as the server)",
    )
    p.add_argument(
        "--server-env", action="append", default=[], metavar="PCHAT_X=V",
        help="a setting for the server, e.g. PCHAT_FILES__UPLOAD_KB_S=20000 (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--file-service", choices=("on", "off"), default="off",
        help="the file service (shards/file_service.py, off by default as in the server)"
        " or the workers' own routes",
    )  # fmt: skip
    p.add_argument("--keep-data", action="store_true", help="keep the server's data folder")
    report.add_run_args(p)
    args = p.parse_args(argv)
    phase_stats.schedule(args.order, args.rounds)  # a bad --order fails before the server
    extra = dict(kv.split("=", 1) for kv in args.server_env)
    data = Path(tempfile.mkdtemp(prefix="pchat-files-"))
    server = BenchServer(
        data, args.workers, DOMAIN, source=args.server_src,
        settings={"PCHAT_FILES__ROOM_QUOTA_KB": "0", **extra},  # many 20 MB files in one room
        file_service=args.file_service == "on",
    )  # fmt: skip
    try:
        server.start()
        result = uvloop.run(_run(args, server))
    finally:
        server.stop()
        if not args.keep_data:  # every upload stays on disk: a run leaves gigabytes
            shutil.rmtree(data, ignore_errors=True)
    result["server_src"] = str(args.server_src or "this checkout")
    result["server_env"] = extra
    result["file_service"] = args.file_service
    result["host_cpus"] = os.cpu_count()
    report.write_named(args, "files", result)
    print(
        f"chat p99 files/calm x{result['p99_ratio']} (95 % {result['p99_ratio_95']}):"
        f" {result['verdict']} against x{args.limit}; transfers {result['transfers']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
