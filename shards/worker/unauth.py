"""Caps on a worker's connections that have not signed in, over SIP and HTTP (shards).

A flood of idle connections must not take the descriptors that signed-in users and
`/healthz` need. A connection over a cap is accepted and closed at once (it never waits
in the listen queue); the refusal is counted by reason and logged at most every
`LOG_EVERY_S`, so a flood cannot flood the log too.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import resource
import time
from collections.abc import Callable
from typing import Literal, cast

from core.config import LimitSettings

log = logging.getLogger(__name__)

Reason = Literal["total", "address"]
LOG_EVERY_S = 10.0  # one line per reason per 10 s says a cap bites without a line per refusal
# Of the descriptor limit, the unauthenticated share: the other half stays for signed-in
# users, /healthz, the store, Redis and the listeners themselves.
FD_SHARE = 0.5


def effective_total(configured: int) -> int:
    """The total cap, never above half the soft descriptor limit; 0 (no cap) becomes it."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    bound = int(soft * FD_SHARE) if soft != resource.RLIM_INFINITY else 0
    if configured == 0:
        return bound
    return min(configured, bound) if bound else configured


class UnauthCaps:
    """Places of unauthenticated connections, in total and per source address.

    Over the per-address cap the new connection is refused, so one host cannot push
    others out; over the total the oldest unauthenticated one is dropped, so a new
    sign-in or health check still gets in while a flood only churns its own places."""

    def __init__(self, total: int, per_address: int, refused: Callable[[Reason], None]) -> None:
        self._total = total  # 0: no total cap
        self._per_address = per_address  # 0: no per-address cap
        self._refused = refused
        self._places: dict[int, tuple[str, Callable[[], None]]] = {}  # oldest first
        self._by_peer: dict[str, int] = {}  # at most one key per held place
        self._ids = itertools.count(1)
        self._logged: dict[Reason, tuple[float, int]] = {}  # reason -> (last line, since)

    @classmethod
    def from_limits(cls, limits: LimitSettings, refused: Callable[[Reason], None]) -> UnauthCaps:
        """The caps of the limits settings (unauth_connections, unauth_per_address)."""
        return cls(effective_total(limits.unauth_connections), limits.unauth_per_address, refused)

    @property
    def held(self) -> int:
        return len(self._places)

    def admit(self, peer: str, close: Callable[[], None]) -> int | None:
        """A place for a new connection from ``peer`` (its key), or None: close it now.
        ``close`` is called if the place is taken back for a newer connection."""
        if self._per_address and self._by_peer.get(peer, 0) >= self._per_address:
            self._refuse("address", peer)
            return None
        if self._total and len(self._places) >= self._total:
            self._refuse("total", peer)
            oldest = next(iter(self._places))
            _, close_oldest = self._places[oldest]
            self.release(oldest)
            close_oldest()
        key = next(self._ids)
        self._places[key] = (peer, close)
        self._by_peer[peer] = self._by_peer.get(peer, 0) + 1
        return key

    def release(self, key: int) -> None:
        """The connection signed in or closed: its place is free (twice is harmless)."""
        place = self._places.pop(key, None)
        if place is None:
            return
        peer = place[0]
        left = self._by_peer[peer] - 1
        if left:
            self._by_peer[peer] = left
        else:
            del self._by_peer[peer]

    def _refuse(self, reason: Reason, peer: str) -> None:
        self._refused(reason)
        now = time.monotonic()
        last, since = self._logged.get(reason, (0.0, 0))
        if now - last < LOG_EVERY_S:
            self._logged[reason] = (last, since + 1)
            return
        self._logged[reason] = (now, 0)
        cap = self._total if reason == "total" else self._per_address
        what = "dropped the oldest" if reason == "total" else "refused one from"
        log.warning(
            "%s %s: %d unauthenticated connections (%s cap); %d more since the last line",
            what,
            peer, cap, reason, since,
        )  # fmt: skip


class CappedProtocol(asyncio.Protocol):
    """An HTTP connection under the caps: it holds a place for as long as it is open
    (HTTP Basic signs in each request), except a WebSocket once it holds a session."""

    def __init__(self, inner: asyncio.Protocol, caps: UnauthCaps) -> None:
        self._inner = inner
        self._caps = caps
        self._place: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        name = peer[0] if isinstance(peer, tuple) else "local"
        abort = cast(asyncio.Transport, transport).abort  # uvloop's is not a subclass
        self._place = self._caps.admit(name, abort)
        if self._place is None:
            abort()
            return
        self._inner.connection_made(transport)

    def signed_in(self) -> None:
        """The connection became a signed-in WebSocket session: it no longer counts."""
        if self._place is not None:
            self._caps.release(self._place)  # again at connection_lost: harmless

    def connection_lost(self, exc: Exception | None) -> None:
        if self._place is None:
            return  # refused: the inner protocol never saw it
        self._caps.release(self._place)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()
