"""Locust users that speak SIP/XCCOS to pchat through the project's client library.

How it runs: locust drives users as gevent greenlets and monkey-patches the standard
library, while the client library is asyncio. Each locust process starts ONE real OS
thread (gevent's original ``start_new_thread``) running a uvloop event loop; uvloop does
its I/O in libuv, which gevent's patches do not touch. A user's call is handed to that
loop with ``call_soon_threadsafe`` and its greenlet waits on a gevent ``AsyncResult``,
which the loop completes through the hub's ``run_callback_threadsafe``: greenlets never
block the hub, and the client library runs unchanged, with its lean receive path. One
loop for all users (not one thread per user) keeps a few thousand users cheap.

Deliveries: every post's text starts with its send time (``time.time_ns()``); the loop
thread timestamps each received post and queues it, and the user's greenlet fires them
into locust's statistics as ``DELIVER grpchat`` (locust's events are not thread-safe, so
only greenlets fire them). Sign-in, join and post are ``SIP signin``, ``XCCOS join`` and
``XCCOS grpchat``.

The users and rooms must exist: write them with the load generator's population, e.g.
``python -m bench.load --profile fanout-max --users 1000 --populate-only
--populate sqlite:///$PWD/data/chat.db`` (users bu000000@example.com…, their random
password in ./.pchat-bench-password, rooms bench-room-00001…). See bench/README.md for
headless and web-UI runs.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import gevent  # type: ignore[import-untyped]
import gevent.monkey  # type: ignore[import-untyped]
import uvloop
from gevent.event import AsyncResult  # type: ignore[import-untyped]
from locust import User, between, events, task
from locust.env import Environment

from bench.load.agent import STAMP_DIGITS, post_text
from bench.load.population import PASSWORD_FILE, read_password
from client.client import LeanClient

_T = TypeVar("_T")
CALL_TIMEOUT_S = 30.0  # a sign-in under load may take this long before it counts as failed


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]
def _options(parser: Any) -> None:
    parser.add_argument("--pchat-domain", default="example.com", include_in_web_ui=True)
    parser.add_argument(
        "--pchat-rooms", type=int, default=5, help="rooms bench-room-00001.. to spread users"
    )
    parser.add_argument("--pchat-text-bytes", type=int, default=120)
    parser.add_argument("--pchat-first-user", type=int, default=0, help="first bu index")
    parser.add_argument(
        "--pchat-password-file", default=PASSWORD_FILE, help="the population's password file"
    )


class _Loop:
    """The process's asyncio side: one uvloop in one real thread."""

    _instance: _Loop | None = None

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        start_thread = gevent.monkey.get_original("_thread", "start_new_thread")
        start_thread(self.loop.run_forever, ())

    @classmethod
    def get(cls) -> _Loop:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def call(self, make: Callable[[], Awaitable[_T]], timeout: float = CALL_TIMEOUT_S) -> _T:
        """Runs ``make()`` on the loop; the calling greenlet yields until it is done."""
        hub_loop = gevent.get_hub().loop
        result: AsyncResult = AsyncResult()

        def finished(done: asyncio.Future[_T]) -> None:
            if done.cancelled():
                hub_loop.run_callback_threadsafe(result.set_exception, TimeoutError("cancelled"))
            elif done.exception() is not None:
                hub_loop.run_callback_threadsafe(result.set_exception, done.exception())
            else:
                hub_loop.run_callback_threadsafe(result.set, done.result())

        def start() -> None:
            future = asyncio.ensure_future(asyncio.wait_for(make(), timeout), loop=self.loop)
            future.add_done_callback(finished)

        self.loop.call_soon_threadsafe(start)
        value: _T = result.get()
        return value


_numbers = itertools.count()


class PchatUser(User):
    """Signs in, joins one bench room, then posts; counts every post it receives."""

    wait_time = between(0.5, 1.5)
    host = "127.0.0.1:5041"

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        options = environment.parsed_options
        self.domain = getattr(options, "pchat_domain", "example.com")
        self.rooms = getattr(options, "pchat_rooms", 5)
        self.text_bytes = getattr(options, "pchat_text_bytes", 120)
        first = getattr(options, "pchat_first_user", 0)
        self.password = read_password(
            Path(getattr(options, "pchat_password_file", None) or PASSWORD_FILE)
        )
        self.index = first + next(_numbers)
        self.loop = _Loop.get()
        self.client: LeanClient | None = None
        self.room = f"ma-chan://{self.domain}/bench-room-{self.index % self.rooms + 1:05d}"
        self._received: deque[tuple[float, int]] = deque()  # (latency ms, bytes)

    def _on_posts(self, chats: list[bytes]) -> None:
        now = time.time_ns()
        for chat in chats:
            try:
                sent = int(chat[:STAMP_DIGITS])
            except ValueError:
                continue
            self._received.append(((now - sent) / 1e6, len(chat)))

    def _timed(self, kind: str, name: str, make: Callable[[], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        error: BaseException | None = None
        value = None
        try:
            value = self.loop.call(make)
        except Exception as exc:  # every failure is a locust failure, with its reason
            error = exc
        events.request.fire(  # type: ignore[no-untyped-call]
            request_type=kind,
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=error,
            context={},
        )
        return value

    def on_start(self) -> None:
        host, _, port = (self.host or "127.0.0.1:5041").rpartition(":")
        user = f"bu{self.index:06d}@{self.domain}"

        async def sign_in() -> LeanClient:
            client = await LeanClient.connect_lean(
                host, int(port), user, self.password, domain=self.domain, on_posts=self._on_posts
            )
            try:
                await client.sign_in()
            except BaseException:
                client.abort()
                raise
            return client

        self.client = self._timed("SIP", "signin", sign_in)
        if self.client is not None:
            client = self.client
            self._timed("XCCOS", "join", lambda: client.join(self.room))

    @task
    def post(self) -> None:
        client = self.client
        if client is None:
            return
        text = post_text(self.text_bytes)

        async def post() -> None:
            await client.post(self.room, text)

        self._timed("XCCOS", "grpchat", post)
        self._fire_deliveries()

    def _fire_deliveries(self) -> None:
        while self._received:
            latency_ms, size = self._received.popleft()
            events.request.fire(  # type: ignore[no-untyped-call]
                request_type="DELIVER",
                name="grpchat",
                response_time=latency_ms,
                response_length=size,
                exception=None,
                context={},
            )

    def on_stop(self) -> None:
        self._fire_deliveries()
        client, self.client = self.client, None
        if client is not None:
            self.loop.loop.call_soon_threadsafe(client.abort)
