"""WebSocket and SIP sessions side by side in one run: deliveries/s, delivery latency and
server memory per session for each kind.

    python -m bench.mixed [--sessions 200] [--room-size 20] [--rate 40] [--seconds 10]
                          [--workers 1] [--server-src DIR]

`pchat serve` (fresh data dir, private redis-server) holds rooms of --room-size people,
half of them SIP sessions (client/lean.py) and half browser sessions over the WebSocket
(bench/load/ws_client.py), --sessions of each kind. The server's RSS is read before the
sign-ins, after the SIP ones and after the WebSocket ones: the growth over each step,
divided by its sessions, is the memory per session of that kind. Then for --seconds
posts go out at --rate per second, from a session of each kind in turn, and every
delivery's latency (send stamp to arrival) is recorded by the kind that received it.
Both kinds run in the same load process and the same server at once, so their figures
compare within the run; compare runs only as ratios (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import uvloop

from bench.load import report, stats
from bench.load.agent import STAMP_DIGITS, post_text
from bench.load.population import new_password, populate, seat, user_address
from bench.load.profiles import Profile, RoomClass
from bench.load.server import BenchServer, MachineProbe, ProcessProbe
from bench.load.ws_client import WsLoadClient
from client.client import LeanClient
from core.xccos import build

# This run's own server's accounts: a password made up per run, never a published one.
PASSWORD = new_password()

DOMAIN = "example.com"
SIGNIN_CONCURRENCY = 32  # sign-ins in flight: the server's sign-in is CPU-bound
MAX_IN_FLIGHT = 2000  # posts awaiting their answer: past it the generator is the limit
TICK_S = 0.005


class Recorder:
    """Deliveries by receiving kind, while ``on`` (the measured phase)."""

    def __init__(self) -> None:
        self.on = False
        self.hists: dict[str, stats.Histogram] = {"sip": {}, "ws": {}}
        self.counts = {"sip": 0, "ws": 0}

    def hook(self, kind: str) -> Callable[[list[bytes]], None]:
        hist = self.hists[kind]

        def on_posts(chats: list[bytes]) -> None:
            if not self.on:
                return
            now = time.time_ns()
            for chat in chats:
                try:
                    stats.add(hist, (now - int(chat[:STAMP_DIGITS])) // 1000)
                except ValueError:
                    continue
            self.counts[kind] += len(chats)

        return on_posts


def _rss(pids: list[int]) -> int:
    return sum(psutil.Process(pid).memory_info().rss for pid in pids)


async def _gather_bounded(factories: list[Callable[[], Any]]) -> list[Any]:
    gate = asyncio.Semaphore(SIGNIN_CONCURRENCY)

    async def one(make: Callable[[], Any]) -> Any:
        async with gate:
            return await make()

    return await asyncio.gather(*(one(f) for f in factories))


async def _sip(server: BenchServer, user: str, rooms: list[str], rec: Recorder) -> LeanClient:
    client = await LeanClient.connect_lean(
        "127.0.0.1", server.sip_port, user, PASSWORD, domain=DOMAIN, on_posts=rec.hook("sip")
    )
    await client.sign_in()
    await client.command("cmd:bjoin", "".join(build.chanib(r) for r in rooms))
    return client


async def _ws(
    http: aiohttp.ClientSession, server: BenchServer, user: str, rooms: list[str], rec: Recorder
) -> WsLoadClient:
    url = f"ws://127.0.0.1:{server.http_port}/ws"
    client = await WsLoadClient.connect(http, url, user, PASSWORD, rec.hook("ws"))
    for room in rooms:
        joined = await client.request("join", room=room)
        assert joined["type"] == "joined", joined
    return client


async def _post(
    client: LeanClient | WsLoadClient, room: str, text: str, out: dict[str, int]
) -> None:
    try:
        if isinstance(client, WsLoadClient):
            reply = await client.request("post", room=room, text=text, key=f"p{time.time_ns()}")
            ok = reply["type"] == "posted"
        else:
            ok = (await client.post_envelope(room, text)).code == 200
    except (OSError, TimeoutError, ConnectionError):
        ok = False
    out["ok" if ok else "failed"] += 1


async def _steady(
    seats: dict[str, list[tuple[Any, str]]], rate: float, seconds: float, text_bytes: int
) -> dict[str, int]:
    """Posts at ``rate``/s for ``seconds``, from a seat of each kind in turn."""
    out = {"ok": 0, "failed": 0, "skipped": 0}
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    start = last = loop.time()
    due, n = 0.0, 0
    kinds = ("sip", "ws")
    while loop.time() - start < seconds:
        await asyncio.sleep(TICK_S)
        now = loop.time()
        due += rate * (now - last)
        last = now
        while due >= 1.0:
            due -= 1.0
            if len(tasks) >= MAX_IN_FLIGHT:
                out["skipped"] += 1
                continue
            client, room = random.choice(seats[kinds[n % 2]])
            n += 1
            task = loop.create_task(_post(client, room, post_text(text_bytes), out))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=10)
    return out


def _population(args: argparse.Namespace) -> tuple[Profile, list[str]]:
    users = 2 * args.sessions
    rooms = [
        RoomClass(name="room", size=args.room_size, count=users // args.room_size, post_rate=1)
    ]
    profile = Profile(name="mixed", mode="steady", users=users, rooms=rooms)
    return profile, seat(profile).rooms


async def _run(
    args: argparse.Namespace, server: BenchServer, room_ids: list[str]
) -> dict[str, Any]:
    rec = Recorder()
    half = args.room_size // 2
    uris = [f"ma-chan://{DOMAIN}/{r}" for r in room_ids]
    rooms_of = [[uris[i // half % len(uris)]] for i in range(args.sessions)]  # half a room each
    pids = server.pids()
    machine, probe = MachineProbe(), ProcessProbe(pids)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        rss = [_rss(pids)]
        sip = await _gather_bounded(
            [
                lambda i=i: _sip(server, user_address(i, DOMAIN), rooms_of[i], rec)
                for i in range(args.sessions)
            ]
        )
        await asyncio.sleep(1.0)  # the joins' work is done before the reading
        rss.append(_rss(pids))
        ws = await _gather_bounded(
            [
                lambda i=i: _ws(
                    http, server, user_address(args.sessions + i, DOMAIN), rooms_of[i], rec
                )
                for i in range(args.sessions)
            ]
        )
        await asyncio.sleep(1.0)
        rss.append(_rss(pids))
        seats = {
            "sip": [(c, rooms_of[i][0]) for i, c in enumerate(sip)],
            "ws": [(c, rooms_of[i][0]) for i, c in enumerate(ws)],
        }
        machine.sample()
        probe.sample()
        rec.on = True
        posts = await _steady(seats, args.rate, args.seconds, args.text_bytes)
        await asyncio.sleep(1.0)  # the last posts' deliveries
        rec.on = False
        machine_cpu, (server_cpu, _) = machine.sample(), probe.sample()
        for c in ws:
            await c.close()
        for c in sip:
            c.abort()
    kinds: dict[str, Any] = {}
    for i, kind in enumerate(("sip", "ws")):
        hist = rec.hists[kind]
        kinds[kind] = {
            "sessions": args.sessions,
            "deliveries": rec.counts[kind],
            "deliveries_per_s": round(rec.counts[kind] / args.seconds, 1),
            **stats.percentiles(hist),
            "server_rss_per_session_kib": round((rss[i + 1] - rss[i]) / args.sessions / 1024, 1),
        }
    s, w = kinds["sip"], kinds["ws"]
    return {
        "sessions_per_kind": args.sessions,
        "room_size": args.room_size,
        "rate_posts_per_s": args.rate,
        "seconds": args.seconds,
        "workers": args.workers,
        "server_set": args.server_set,
        "posts": posts,
        "sip": s,
        "ws": w,
        "ratios_ws_to_sip": {
            "deliveries_per_s": _ratio(w["deliveries_per_s"], s["deliveries_per_s"]),
            "p99": _ratio(w["p99"], s["p99"]),
            "rss_per_session": _ratio(
                w["server_rss_per_session_kib"], s["server_rss_per_session_kib"]
            ),
        },
        "server_rss_mb": [round(r / 2**20, 1) for r in rss],
        "server_cpu_pct": round(server_cpu, 1),
        "machine_cpu_pct": round(machine_cpu, 1),  # of one core; others' jobs included
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=200, help="sessions of each kind")
    p.add_argument("--room-size", type=int, default=20, help="people per room, half of each kind")
    p.add_argument("--rate", type=float, default=40.0, help="posts per second in all")
    p.add_argument("--seconds", type=float, default=10.0, help="of the measured phase")
    p.add_argument("--text-bytes", type=int, default=120, help="characters per post")
    p.add_argument("--workers", type=int, default=1, help="server workers")
    p.add_argument(
        "--server-set", action="append", default=[], metavar="PCHAT_KEY=VALUE",
        help="environment for the server, e.g. PCHAT_WEBSOCKET__HEARTBEAT_S=0",
    )  # fmt: skip
    report.add_run_args(p)
    args = p.parse_args(argv)
    if args.room_size < 2 or args.room_size % 2 or (2 * args.sessions) % args.room_size:
        p.error("--room-size must be even and divide 2 x --sessions")
    profile, room_ids = _population(args)
    data = Path(tempfile.mkdtemp(prefix="pchat-mixed-"))
    env = dict(item.split("=", 1) for item in args.server_set)
    server = BenchServer(data, args.workers, DOMAIN, source=args.server_src, settings=env)
    data.mkdir(parents=True, exist_ok=True)
    uvloop.run(populate(server.store_url, DOMAIN, profile, seat(profile), PASSWORD))
    server.start()
    try:
        result = uvloop.run(_run(args, server, room_ids))
    finally:
        server.stop()
    report.write_named(args, "mixed", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
