"""File transfers beside chat: upload and download throughput of 1 MB and 20 MB files
while chat traffic runs, and the chat round trip with and without files, in one run.

    python -m bench.files [--seconds 20] [--calm-seconds 8] [--sizes-mb 1,20]
                          [--parallel 2] [--workers 2] [--server-src DIR]

`pchat serve --workers 2` (fresh data dir, private redis-server, no room quota). A probe
pair of users posts in one room and times each post to its delivery (one every 20 ms):
first --calm-seconds alone, then --seconds while --parallel loops in another process
upload a file of each size in turn to another room (HTTP Basic) and download it back,
then --calm-seconds alone again. Reported: the probe's p50/p99 in the three phases, the
ratio of the p99 with files to the calm p99s, and MB/s per size and direction (the median
over the transfers, and the total bytes over the time spent). One host over loopback:
the transfers' client shares the CPUs with the server, and on a shared machine other jobs
do too, so only the ratios within one run mean much.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]
import uvloop

from bench.load import report
from bench.load.server import BenchServer, histogram_quantiles, scrape
from client.client import PchatClient

DOMAIN = "example.com"
PASSWORD = "bench-pw"
PROBE_EVERY_S = 0.02  # 50 posts/s: enough samples for a p99 in a few seconds
TRANSFER_TIMEOUT_S = 300.0  # a 20 MB transfer on a loaded host takes seconds, never minutes
# The server's own view of each phase (summed over the workers), read from /metrics: how
# late the loops' 10 Hz timer fired, and post-to-delivery inside the server, so that a
# slower round trip can be told apart from the probe's own process waiting for a CPU.
LOOP_LAG = "pchat_worker_loop_lag_seconds"
DELIVERY = "pchat_fanout_delivery_latency_seconds"
COMMAND = "pchat_xccos_command_latency_seconds"  # of the grpchat posts only (see scrape)


def _admin(server: BenchServer, *args: str) -> str:
    cmd = [sys.executable, "-m", "shards.cli", "admin", *args]
    cmd += ["--data-dir", str(server.data_dir.resolve()), "--store", server.store_url]
    cmd += ["--redis-url", server.redis.url, "--domain", DOMAIN]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


async def _transfer_loop(
    http: aiohttp.ClientSession, room: str, blobs: list[bytes], end: float, out: dict[str, Any]
) -> None:
    basic = base64.b64encode(f"carl@{DOMAIN}:{PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}"}
    i = 0
    while time.monotonic() < end:
        data = blobs[i % len(blobs)]
        i += 1
        key = f"{len(data) / 1e6:g}MB"
        start = time.monotonic()
        url = f"/api/rooms/{room}/files"
        async with http.post(url, params={"name": "b.bin"}, data=data, headers=headers) as r:
            body = await r.json()
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
        assert got == len(data), (got, len(data))
        out.setdefault(f"upload_{key}", []).append((len(data), up))
        out.setdefault(f"download_{key}", []).append((len(data), down))


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _transfers(
    http_port: int,
    room: str,
    sizes: list[int],
    parallel: int,
    seconds: float,
    ready: Callable[[], None],
) -> dict[str, Any]:
    blobs = [os.urandom(size) for size in sizes]
    out: dict[str, Any] = {}
    ready()  # the probe's phase with files starts now, not while this process imports
    cpu_at_start = _own_cpu_s()
    end = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=TRANSFER_TIMEOUT_S)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{http_port}", timeout=timeout) as http:
        await asyncio.gather(
            *(_transfer_loop(http, room, blobs[n:] + blobs[:n], end, out) for n in range(parallel))
        )
    out["cpu_s"] = _own_cpu_s() - cpu_at_start
    return out


def _transfer_process(
    port: int, room: str, sizes: list[int], parallel: int, seconds: float, pipe: Any
) -> None:
    """Transfers run in a process of their own, so the probe's timings are the server's.
    It sends "ready" when its transfers start, then their results and its CPU seconds."""
    pipe.send(
        uvloop.run(_transfers(port, room, sizes, parallel, seconds, lambda: pipe.send("ready")))
    )


async def _probe(
    sender: PchatClient, reader: PchatClient, room: str, seconds: float
) -> list[float]:
    trips: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        await sender.post(room, f"probe {len(trips)}")
        while (await reader.next_post(timeout=30)).text != f"probe {len(trips)}":
            pass
        trips.append((time.monotonic() - start) * 1000)
        await asyncio.sleep(PROBE_EVERY_S)
    return trips


def _q(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else 0.0


def _throughput(samples: list[tuple[int, float]]) -> dict[str, float]:
    rates = [size / secs / 1e6 for size, secs in samples if secs > 0]
    total = sum(size for size, _ in samples) / max(sum(s for _, s in samples), 1e-9) / 1e6
    return {
        "transfers": len(samples),
        "median_mb_s": round(statistics.median(rates), 1) if rates else 0.0,
        "total_mb_s": round(total, 1),
    }


class _Meter:
    """Per phase: CPU seconds by who spent them (in % of one core: 200 % is both cores of
    two) and the server's histograms. The host is shared, so "others" (the host's busy time
    less this bench's processes) says how much of a phase's figures is someone else."""

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

    def read(self, skip: int = 0) -> dict[str, Any]:
        """A snapshot; ``skip``: the transfer process's pid (it counts its own CPU)."""
        assert self._server.proc is not None
        top = psutil.Process(self._server.proc.pid)
        tree = [top, *top.children(recursive=True)]  # the supervisor and its workers
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
    def phase(a: dict[str, Any], b: dict[str, Any], transfer_cpu_s: float = 0.0) -> dict[str, Any]:
        wall = max(b["t"] - a["t"], 1e-9)
        spent = {
            k: sum(s - a[k].get(pid, 0.0) for pid, s in b[k].items())
            for k in ("server", "probe_client", "redis_and_helpers")
        }
        spent["transfer_client"] = transfer_cpu_s
        host = b["host_busy"] - a["host_busy"]
        spent["others_on_host"] = max(host - sum(spent.values()), 0.0)
        cpu = {k: round(100 * v / wall, 1) for k, v in spent.items()}
        cpu["host_busy"] = round(100 * host / wall, 1)
        m0, m1 = a["metrics"], b["metrics"]
        return {
            "cpu_pct_of_one_core": cpu,
            "server_loop_lag_ms": histogram_quantiles(m0, m1, LOOP_LAG, (50.0, 99.0)),
            "server_delivery_ms": histogram_quantiles(m0, m1, DELIVERY, (50.0, 99.0)),
            "server_grpchat_ms": histogram_quantiles(m0, m1, COMMAND, (50.0, 99.0)),
        }


def _ratio(loaded: list[float], calm: list[float], q: float) -> float:
    return round(_q(loaded, q) / max(_q(calm, q), 1e-9), 2)


async def _run(args: argparse.Namespace, server: BenchServer) -> dict[str, object]:
    load_at_start = [round(x, 2) for x in os.getloadavg()]  # others' jobs on the host
    for name in ("ann", "ben", "carl"):
        _admin(server, "user", "add", f"{name}@{DOMAIN}", "--password", PASSWORD)
    _admin(server, "category", "add", "Bench")
    chat = _admin(server, "room", "add", "Chat", "--category", "Bench", "--privacy", "open")
    drop = _admin(server, "room", "add", "Drop", "--category", "Bench", "--privacy", "open")
    sender, reader = [
        await PchatClient.connect("127.0.0.1", server.sip_port, f"{n}@{DOMAIN}", PASSWORD)
        for n in ("ann", "ben")
    ]
    for c in (sender, reader):
        await c.sign_in()
        await c.join(chat)
    await _probe(sender, reader, chat, 1.0)  # warm-up: connections, caches, the room loaded
    meter = _Meter(server)
    marks = [meter.read()]
    calm_before = await _probe(sender, reader, chat, args.calm_seconds)
    sizes = [int(float(mb) * 1e6) for mb in args.sizes_mb.split(",")]
    receive, send = multiprocessing.Pipe(duplex=False)
    job = (server.http_port, drop.rpartition("/")[2], sizes, args.parallel, args.seconds, send)
    mover = multiprocessing.get_context("spawn").Process(target=_transfer_process, args=job)
    mover.start()
    assert await asyncio.to_thread(receive.recv) == "ready"
    marks.append(meter.read(skip=mover.pid or 0))
    with_files = await _probe(sender, reader, chat, args.seconds)
    moved = await asyncio.to_thread(receive.recv)
    marks.append(meter.read(skip=mover.pid or 0))  # the last transfers end after the probe
    await asyncio.to_thread(mover.join, 30)
    calm_after = await _probe(sender, reader, chat, args.calm_seconds)
    marks.append(meter.read())
    for c in (sender, reader):
        await c.close()
    return {
        "workers": args.workers,
        "parallel_transfers": args.parallel,
        "seconds_with_files": args.seconds,
        "chat": {
            "calm_before": {
                "posts": len(calm_before),
                "p50_ms": _q(calm_before, 0.5),
                "p99_ms": _q(calm_before, 0.99),
            },
            "with_files": {
                "posts": len(with_files),
                "p50_ms": _q(with_files, 0.5),
                "p99_ms": _q(with_files, 0.99),
            },
            "calm_after": {
                "posts": len(calm_after),
                "p50_ms": _q(calm_after, 0.5),
                "p99_ms": _q(calm_after, 0.99),
            },
        },  # fmt: skip
        # Against each calm phase: on a shared host they differ, and the spread says
        # how much of a ratio is the host rather than the files.
        "p99_ratio_vs_before": _ratio(with_files, calm_before, 0.99),
        "p99_ratio_vs_after": _ratio(with_files, calm_after, 0.99),
        "p50_ratio_vs_before": _ratio(with_files, calm_before, 0.5),
        "p50_ratio_vs_after": _ratio(with_files, calm_after, 0.5),
        "load_average_at_start": load_at_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "phases": {
            "calm_before": _Meter.phase(marks[0], marks[1]),
            "with_files": _Meter.phase(marks[1], marks[2], moved.pop("cpu_s")),
            "calm_after": _Meter.phase(marks[2], marks[3]),
        },
        "transfers": {k: _throughput(v) for k, v in sorted(moved.items()) if k != "errors"},
        "errors": moved.get("errors", []),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0, help="how long files stream")
    p.add_argument("--calm-seconds", type=float, default=8.0, help="chat alone, before and after")
    p.add_argument("--sizes-mb", default="1,20", help="file sizes, comma-separated MB (10^6)")
    p.add_argument("--parallel", type=int, default=2, help="transfer loops at once")
    p.add_argument("--workers", type=int, default=2, help="server worker processes")
    p.add_argument(
        "--server-env", action="append", default=[], metavar="PCHAT_X=V",
        help="a setting for the server, e.g. PCHAT_FILES__UPLOAD_KB_S=20000 (repeatable)",
    )  # fmt: skip
    report.add_run_args(p)
    args = p.parse_args(argv)
    extra = dict(kv.split("=", 1) for kv in args.server_env)
    data = Path(tempfile.mkdtemp(prefix="pchat-files-"))
    server = BenchServer(
        data, args.workers, DOMAIN, source=args.server_src,
        settings={"PCHAT_FILES__ROOM_QUOTA_KB": "0", **extra},  # many 20 MB files in one room
    )  # fmt: skip
    server.start()
    try:
        result = uvloop.run(_run(args, server))
    finally:
        server.stop()
    result["server_src"] = str(args.server_src or "this checkout")
    result["server_env"] = extra
    result["host_cpus"] = os.cpu_count()
    report.write_named(args, "files", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
