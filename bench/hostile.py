"""The hostile envelope: others' post round trip and the worker's RSS while one user
floods a worker with history requests, in one run.

    python -m bench.hostile [--commands 300] [--attackers 4] [--seconds 15]
                            [--history 2000] [--server-src DIR]

`pchat serve --workers 1` (fresh data dir, private redis-server) holds one room with
--history posts of 1 KB. Then, for --seconds, --attackers connections of one user send
envelopes of --commands `bccontext <last cnt="500"/>` each, back to back, while a probe
pair of other users posts in another room and times each post to its delivery (a post
every 20 ms; 3 s of it alone first, as the calm baseline). Reported: the probe's
p50/p99/max round trip, calm and under attack, how the attackers' envelopes
were answered, and the worker's RSS before and at most during the attack. `--commands
300` is the review's finding (one envelope froze a worker for 11 s); the fair worker caps
an envelope's items (`limits.envelope_items`), so pass that number to measure the
largest envelope it accepts. Loopback only; bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import uvloop

from bench.load import report
from bench.load.server import BenchServer
from client.client import PchatClient, SipError
from core.xccos import build

DOMAIN = "example.com"
PROBE_EVERY_S = 0.02
CALM_S = 3.0  # the probe alone first: the same round trip with no attack, in the same run
ENVELOPE_TIMEOUT_S = 60.0  # the pre-fair worker took ~11 s for one 300-command envelope


def _admin(server: BenchServer, *args: str) -> str:
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "shards.cli", "admin", *args]
    cmd += ["--data-dir", str(server.data_dir.resolve()), "--store", server.store_url]
    cmd += ["--redis-url", server.redis.url, "--domain", DOMAIN]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


async def _client(server: BenchServer, name: str) -> PchatClient:
    c = await PchatClient.connect("127.0.0.1", server.sip_port, f"{name}@{DOMAIN}", "bench-pw")
    await c.sign_in()
    return c


async def _attack_loop(
    client: PchatClient, room: str, commands: int, end: float, answers: Counter[str]
) -> None:
    query = f'{build.chanib(room)}<bcq><last cnt="500"/></bcq>'
    hostile = "".join(build.cmd("cmd:bccontext", n, query) for n in range(commands))
    while time.monotonic() < end:
        try:
            await client.send_envelope(hostile, timeout=ENVELOPE_TIMEOUT_S)
            answers["200"] += 1
        except SipError as exc:
            answers[str(exc.status)] += 1
        except (TimeoutError, ConnectionError) as exc:  # cut off (a slow reader) or stalled
            answers[type(exc).__name__] += 1
            return


async def _attack(
    port: int, room: str, attackers: int, commands: int, seconds: float
) -> dict[str, int]:
    clients = []
    for _ in range(attackers):
        c = await PchatClient.connect("127.0.0.1", port, f"mallory@{DOMAIN}", "bench-pw")
        await c.sign_in()
        await c.join(room)
        clients.append(c)
    answers: Counter[str] = Counter()
    end = time.monotonic() + seconds
    await asyncio.gather(*(_attack_loop(c, room, commands, end, answers) for c in clients))
    for c in clients:
        await c.close()
    return dict(answers)


def _attacker_process(
    port: int, room: str, attackers: int, commands: int, seconds: float, out: Any
) -> None:
    """The attack runs in a process of its own, so the probe's timings are the server's."""
    out.send(uvloop.run(_attack(port, room, attackers, commands, seconds)))


async def _probe(sender: PchatClient, reader: PchatClient, room: str, end: float) -> list[float]:
    trips: list[float] = []
    while time.monotonic() < end:
        start = time.monotonic()
        await sender.post(room, f"probe {len(trips)}")
        while True:
            got = await reader.next_post(timeout=ENVELOPE_TIMEOUT_S)
            if got.text == f"probe {len(trips)}":
                break
        trips.append(time.monotonic() - start)
        await asyncio.sleep(PROBE_EVERY_S)
    return trips


async def _rss_peak(pid: int, end: float) -> int:
    proc, peak = psutil.Process(pid), 0
    while time.monotonic() < end:
        peak = max(peak, proc.memory_info().rss)
        await asyncio.sleep(0.1)
    return peak


def _q(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _run(args: argparse.Namespace, server: BenchServer) -> dict[str, object]:
    for name in ("mallory", "ann", "ben"):
        _admin(server, "user", "add", f"{name}@{DOMAIN}", "--password", "bench-pw")
    _admin(server, "category", "add", "Bench")
    big = _admin(server, "room", "add", "Archive", "--category", "Bench", "--privacy", "open")
    quiet = _admin(server, "room", "add", "Quiet", "--category", "Bench", "--privacy", "open")
    writer = await _client(server, "ann")
    await writer.join(big)
    text = "h" * 1024
    for first in range(0, args.history, 64):  # 64 in flight: quick, and bounded
        await asyncio.gather(
            *(writer.post(big, text) for _ in range(min(64, args.history - first)))
        )
    sender, reader = writer, await _client(server, "ben")
    await sender.join(quiet)
    await reader.join(quiet)
    [pid] = server.pids()
    calm = [t * 1000 for t in await _probe(sender, reader, quiet, time.monotonic() + CALM_S)]
    rss_before = psutil.Process(pid).memory_info().rss
    receive, send = multiprocessing.Pipe(duplex=False)
    attack = (server.sip_port, big, args.attackers, args.commands, args.seconds, send)
    attacker = multiprocessing.get_context("spawn").Process(target=_attacker_process, args=attack)
    attacker.start()
    await asyncio.sleep(1.0)  # its sign-ins are done: the attack is on
    end = time.monotonic() + args.seconds - 1.0
    trips, peak = await asyncio.gather(_probe(sender, reader, quiet, end), _rss_peak(pid, end))
    answers = await asyncio.to_thread(receive.recv)
    await asyncio.to_thread(attacker.join, 30)
    for c in (sender, reader):
        await c.close()
    ms = [t * 1000 for t in trips]
    return {
        "commands_per_envelope": args.commands,
        "attackers": args.attackers,
        "seconds": args.seconds,
        "history_posts": args.history,
        "calm_p50_ms": round(_q(calm, 0.5), 2),
        "calm_p99_ms": round(_q(calm, 0.99), 2),
        "probe_posts": len(ms),
        "probe_p50_ms": round(_q(ms, 0.5), 2),
        "probe_p99_ms": round(_q(ms, 0.99), 2),
        "probe_max_ms": round(max(ms), 2) if ms else None,
        "envelope_answers": answers,
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_peak_mb": round(peak / 2**20, 1),
        "rss_growth_mb": round((peak - rss_before) / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--commands", type=int, default=300, help="bccontext commands per envelope")
    p.add_argument("--attackers", type=int, default=4, help="attacking connections")
    p.add_argument("--seconds", type=float, default=15.0, help="how long the attack lasts")
    p.add_argument("--history", type=int, default=2000, help="posts of 1 KB in the room")
    report.add_run_args(p)
    args = p.parse_args(argv)
    data = Path(tempfile.mkdtemp(prefix="pchat-hostile-"))
    server = BenchServer(data, 1, DOMAIN, source=args.server_src)
    server.start()
    try:
        result = uvloop.run(_run(args, server))
    finally:
        server.stop()
    result["server_src"] = str(args.server_src or "this checkout")
    report.write_named(args, "hostile", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
