"""One load process (uvloop): signs its share of users in, joins their rooms, posts at the
rate the coordinator sets, and records every delivery's latency from the send timestamp
at the head of the post's text (``time.time_ns()``: comparable between processes).

It talks to the coordinator over a pipe: ticks of running totals once a second, a result
at the end. The ceiling's receiving side lives in ``bench.load.ceiling``.
"""

from __future__ import annotations

import asyncio
import gc
import random
import resource
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from bench.load import stats
from bench.load.ceiling import CeilingReceivers
from client.client import LeanClient, SipError, XccosError
from core.xccos import build
from shards.worker.heap import tuned_gc

TICK_S = 1.0
POST_TICK_S = 0.005  # posting schedule resolution: posts due in each 5 ms go out together
# Posts waiting for their rpl:grpchat, per process: past it the generator itself is the
# bottleneck and says so (posts_skipped) instead of queueing without bound.
MAX_POSTS_IN_FLIGHT = 20_000
BJOIN_ROOMS = 24  # rooms per cmd:bjoin at sign-in
BJOIN_ATTEMPTS = 5  # a room a bjoin refused with 503 is asked this often in all...
BJOIN_RETRY_S = 0.5  # ...after 0.5, 1, 1.5, 2 s: a shard's takeover takes a few seconds
STAMP_DIGITS = 19  # time.time_ns() until the year 2286
TAG_AT = STAMP_DIGITS + 1  # after the stamp and a space: the room class's tag
# The load process's collector, tuned as a worker's (shards/worker/heap.py): the start-up
# heap frozen, the youngest generation collected every 20,000 net allocations instead of
# 700. Signing in 5,000 sessions keeps every object alive, so each young pass was work for
# nothing: 22.5 % of a load process's CPU in signin-storm.
GC_GEN0_THRESHOLD = 20_000


class AgentConfig(msgspec.Struct, frozen=True, kw_only=True):
    agent_id: int
    host: str
    port: int
    domain: str
    password: str
    local_host: str | None
    users: list[int]  # global user indexes this process signs in
    seats: list[list[int]]  # per local user: indexes into rooms
    rooms: list[str]  # room URIs
    room_class: list[str]
    signin_rate: float  # this process's share; 0: as fast as accepted
    signin_concurrency: int
    signin_timeout_s: float
    text_bytes: int


def post_text(size: int, tag: str = "x") -> str:
    """A post's text: its send time in ns, a one-character tag (the room class), then
    padding to ``size`` characters."""
    stamp = f"{time.time_ns():0{STAMP_DIGITS}d} {tag}"
    return stamp + "x" * max(0, size - len(stamp))


class Agent:
    def __init__(self, cfg: AgentConfig, pipe: Connection) -> None:
        self.cfg = cfg
        self.pipe = pipe
        self.clients: list[LeanClient | None] = [None] * len(cfg.users)
        self.counters = stats.Counters()
        self.deliveries: dict[int, stats.Histogram] = {}
        self.hists: dict[str, stats.Histogram] = {"signin": {}, "bjoin": {}, "join": {}, "post": {}}
        self.errors: dict[str, int] = {}
        self.totals = {"signed_in": 0, "posts_sent": 0, "posts_ok": 0, "deliveries": 0}
        self.by_class: dict[str, list[tuple[int, int]]] = {}  # class -> (client, room) seats
        self.rates: dict[str, float] = {}
        self.join_rate = 0.0
        self.in_flight = 0
        self.running = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.ceiling = CeilingReceivers()
        self.signin_window = [0.0, 0.0]  # wall clock: first sign-in started, last one ended
        # Each room class gets a one-digit tag in its posts' text, so deliveries are also
        # counted per class: a 16,000-people room's fan-out is another story than a 30's.
        names = list(dict.fromkeys(cfg.room_class))[:10]
        self.tag_of = {name: str(i) for i, name in enumerate(names)}
        self.by_tag: dict[bytes, stats.Histogram] = {str(i).encode(): {} for i in range(len(names))}

    # -- bookkeeping ----------------------------------------------------------------------

    def count(self, name: str, n: int = 1) -> None:
        self.counters.add(int(time.time()), name, n)

    def error(self, phase: str, exc: BaseException | str) -> None:
        key = f"{phase}: {exc if isinstance(exc, str) else type(exc).__name__}"
        self.errors[key] = self.errors.get(key, 0) + 1
        self.count(f"{phase}_errors")

    def observe(self, name: str, started: float) -> None:
        stats.add(self.hists[name], int((time.perf_counter() - started) * 1e6))

    def on_posts(self, chats: list[bytes]) -> None:
        """The lean receive path's hook: one call per read, one dict update per post."""
        now = time.time_ns()
        second = now // 1_000_000_000
        hist = self.deliveries.get(second)
        if hist is None:
            hist = self.deliveries[second] = {}
        bucket, tags = stats.bucket, self.by_tag
        for chat in chats:
            try:
                us = (now - int(chat[:STAMP_DIGITS])) // 1000
            except ValueError:
                self.error("deliver", "post without a send stamp")
                continue
            b = bucket(us)
            hist[b] = hist.get(b, 0) + 1
            by_tag = tags.get(chat[TAG_AT : TAG_AT + 1])
            if by_tag is not None:
                by_tag[b] = by_tag.get(b, 0) + 1
        self.totals["deliveries"] += len(chats)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- sign-in --------------------------------------------------------------------------

    async def sign_in_all(self) -> None:
        """At ``signin_rate`` with at most ``signin_concurrency`` in flight, within the
        phase's time limit; sessions still signing in then are left out of the run."""
        cfg = self.cfg
        gate = asyncio.Semaphore(cfg.signin_concurrency)
        self.signin_window[0] = time.time()
        started = time.monotonic()
        deadline = started + cfg.signin_timeout_s
        pending: set[asyncio.Task[None]] = set()
        for n in range(len(cfg.users)):
            await gate.acquire()
            if cfg.signin_rate > 0:
                delay = started + n / cfg.signin_rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if time.monotonic() > deadline:
                self.error("signin", "not started: the sign-in phase timed out")
                break
            task = asyncio.get_running_loop().create_task(self._sign_in_one(n))
            pending.add(task)
            task.add_done_callback(pending.discard)
            task.add_done_callback(lambda _: gate.release())
        if pending:
            await asyncio.wait(pending, timeout=max(1.0, deadline - time.monotonic()))
        for n, client in enumerate(self.clients):
            if client is not None:
                for room in cfg.seats[n]:
                    self.by_class.setdefault(cfg.room_class[room], []).append((n, room))

    async def _sign_in_one(self, n: int) -> None:
        cfg = self.cfg
        user = f"bu{cfg.users[n]:06d}@{cfg.domain}"
        started = time.perf_counter()
        client: LeanClient | None = None
        try:
            client = await LeanClient.connect_lean(
                cfg.host, cfg.port, user, cfg.password, domain=cfg.domain,
                local_host=cfg.local_host, on_posts=self.on_posts,
            )  # fmt: skip
            await client.sign_in()
        except (OSError, TimeoutError, SipError, XccosError) as exc:
            self.error("signin", exc)
            if client is not None:
                client.abort()
            return
        self.observe("signin", started)
        self.signin_window[1] = time.time()
        self.count("signins")
        self.totals["signed_in"] += 1
        self.clients[n] = client
        rooms = cfg.seats[n]
        for at in range(0, len(rooms), BJOIN_ROOMS):
            await self._bjoin(client, [cfg.rooms[r] for r in rooms[at : at + BJOIN_ROOMS]])

    async def _bjoin(self, client: LeanClient, uris: list[str]) -> None:
        started = time.perf_counter()
        for attempt in range(BJOIN_ATTEMPTS):
            try:
                reply = await client.command("cmd:bjoin", "".join(build.chanib(u) for u in uris))
            except (OSError, TimeoutError, SipError, XccosError) as exc:
                self.error("join", exc)
                return
            refused = reply.data.findall("chanerr") if reply.data is not None else []
            self.count("joins", len(uris) - len(refused))
            # A room refused with 503 (its shard changing hands) is asked again, as a
            # client retries a 503; other refusals are final.
            again = [str(c.get("uri")) for c in refused if c.get("code") == "503"]
            final = [c for c in refused if c.get("code") != "503"]
            if attempt + 1 == BJOIN_ATTEMPTS:
                final = refused
            for chanerr in final:
                self.error("join", f"bjoin refused a room: {chanerr.get('code')} {chanerr.text}")
            if not again or attempt + 1 == BJOIN_ATTEMPTS:
                break
            self.count("bjoin_retries", len(again))
            uris = again
            await asyncio.sleep(BJOIN_RETRY_S * (attempt + 1))
        self.observe("bjoin", started)

    # -- the measured phase ---------------------------------------------------------------

    async def poster(self) -> None:
        loop = asyncio.get_running_loop()
        due = {name: 0.0 for name in self.by_class}
        last = loop.time()
        while self.running:
            await asyncio.sleep(POST_TICK_S)
            now = loop.time()
            elapsed, last = now - last, now
            for name, rate in self.rates.items():
                seats = self.by_class.get(name)
                if not seats or rate <= 0:
                    continue
                due[name] = due.get(name, 0.0) + rate * elapsed
                while due[name] >= 1.0:
                    due[name] -= 1.0
                    self._post_one(random.choice(seats))

    def _post_one(self, seat: tuple[int, int]) -> None:
        client = self.clients[seat[0]]
        if client is None or client.closed.is_set():
            self.error("post", "session closed")
            return
        if self.in_flight >= MAX_POSTS_IN_FLIGHT:
            self.count("posts_skipped")
            return
        self.in_flight += 1
        self.totals["posts_sent"] += 1
        self.count("posts_sent")
        tag = self.tag_of.get(self.cfg.room_class[seat[1]], "x")
        self._spawn(self._post(client, self.cfg.rooms[seat[1]], tag))

    async def _post(self, client: LeanClient, room: str, tag: str) -> None:
        started = time.perf_counter()
        try:
            reply = await client.post_envelope(room, post_text(self.cfg.text_bytes, tag))
            if reply.code == 200:
                self.observe("post", started)
                self.count("posts_ok")
                self.totals["posts_ok"] += 1
            else:
                self.error("post", f"rpl:grpchat {reply.code}")
        except (OSError, TimeoutError, SipError, XccosError) as exc:
            self.error("post", f"SIP {exc.status}" if isinstance(exc, SipError) else exc)
        finally:
            self.in_flight -= 1

    async def joiner(self) -> None:
        """Join churn: a held seat parts its room and joins it again, at join_rate per s."""
        seats = [seat for seats in self.by_class.values() for seat in seats]
        while self.running and seats:
            if self.join_rate <= 0:
                await asyncio.sleep(0.1)
                continue
            await asyncio.sleep(random.expovariate(self.join_rate))
            self._spawn(self._rejoin(random.choice(seats)))

    async def _rejoin(self, seat: tuple[int, int]) -> None:
        client = self.clients[seat[0]]
        if client is None or client.closed.is_set():
            return
        room = self.cfg.rooms[seat[1]]
        try:
            await client.part(room)
            started = time.perf_counter()
            await client.join(room)
            self.observe("join", started)
            self.count("rejoins")
        except (OSError, TimeoutError, SipError, XccosError) as exc:
            self.error("rejoin", exc)

    # -- control --------------------------------------------------------------------------

    def _tick(self) -> dict[str, Any]:
        live = [c for c in self.clients if c is not None]
        return {
            **self.totals,
            "retries_503": sum(c.retries_503 for c in live),
            "in_flight": self.in_flight,
            "errors": sum(self.errors.values()),
        }

    async def ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.pipe.send(("tick", self.cfg.agent_id, self._tick()))

    def _read_pipe(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                message = self.pipe.recv()
            except (EOFError, OSError):
                message = ("exit",)
            loop.call_soon_threadsafe(self._inbox.put_nowait, message)
            if message[0] == "exit":
                return

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._read_pipe, args=(loop,), daemon=True).start()
        ticker = loop.create_task(self.ticker())
        await self.sign_in_all()
        self.pipe.send(("signed_in", self.cfg.agent_id, self._tick()))
        while True:
            message = await self._inbox.get()
            if not await self._handle(message):
                break
        ticker.cancel()

    async def _handle(self, message: tuple[Any, ...]) -> bool:
        kind = message[0]
        if kind == "rates":
            self.rates, self.join_rate = message[1], message[2]
            if not self.running:
                self.running = True
                self._spawn(self.poster())
                self._spawn(self.joiner())
        elif kind == "stop":
            self.running = False
            await asyncio.sleep(message[1])  # the drain: deliveries of the last posts
            self.pipe.send(("result", self.cfg.agent_id, self.result()))
        elif kind == "close":
            # Cancel what still waits for the server first: a future failed by the aborted
            # connection with nobody left to await it would be logged as never retrieved.
            pending = list(self._tasks)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for client in self.clients:
                if client is not None:
                    client.abort()
            self.clients = [None] * len(self.clients)
            self.pipe.send(("closed", self.cfg.agent_id))
        elif kind == "ceiling":
            await self.ceiling.run(self.pipe, self.cfg, message[1], *message[2:])
        elif kind == "exit":
            return False
        return True

    def result(self) -> dict[str, Any]:
        live = [c for c in self.clients if c is not None]
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "counters": self.counters.seconds,
            "deliveries": self.deliveries,
            "by_class": {name: self.by_tag[tag.encode()] for name, tag in self.tag_of.items()},
            "hists": self.hists,
            "errors": self.errors,
            "sessions": len(live),
            "retries_503": sum(c.retries_503 for c in live),
            "post_bytes": sum(c.bytes_received for c in live),
            "posts_received": sum(c.posts_received for c in live),
            "notices_received": sum(c.notices_received for c in live),
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "signin_window": self.signin_window,
            "gc": {"gen0_threshold": gc.get_threshold()[0], "frozen": gc.get_freeze_count()},
        }


def agent_main(config: bytes, pipe: Connection) -> None:
    """Entry of a load process (multiprocessing, spawn)."""
    import uvloop

    cfg = msgspec.msgpack.decode(config, type=AgentConfig)
    agent = Agent(cfg, pipe)
    with tuned_gc(GC_GEN0_THRESHOLD):  # set up: what is there now is never scanned again
        uvloop.run(agent.serve())
