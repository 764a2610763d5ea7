"""The worker's connections with output waiting, flushed together (ARCHITECTURE §8a).

A connection written to in a loop turn registers here once; everything it queued goes out
in one write. Two moments flush the list: a sliced delivery turn, as soon as it ends (its
deliveries are the latency path: waiting for one more loop turn meant one more round of
every socket's reads before the writes, see bench/README.md), and otherwise one callback
at the start of the next turn, for replies and anything else sent meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger(__name__)


class Flushable(Protocol):
    def flush(self) -> None: ...
    def abort(self) -> None: ...


class PendingOutput:
    """The connections written to since the last flush, each once, in order."""

    def __init__(self) -> None:
        # At most every connection of the worker once (each registers only while it has
        # nothing registered), so it is bounded by the connection caps.
        self._dirty: list[Flushable] = []
        self._scheduled = False
        self.flushes = 0  # flushes that wrote to at least one connection (tests)

    def want_flush(self, conn: Flushable) -> None:
        """``conn`` has output queued: flushed by the next ``flush_all``."""
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_scheduled)

    def _flush_scheduled(self) -> None:
        self._scheduled = False
        self.flush_all()

    def flush_all(self) -> None:
        """Writes every registered connection's output now."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, []
        self.flushes += 1
        for conn in dirty:
            try:
                conn.flush()
            except Exception:  # one broken connection must not leave the others unflushed
                log.exception("flushing a connection failed; closing it")
                conn.abort()
