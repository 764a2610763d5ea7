"""A worker's places for file transfers: a fixed number at once, refused (503) past it.

Every chunk of a transfer costs the worker's event loop a turn and its thread pool a hop
(core/files/directory.py), and holds a chunk of memory; chat shares that loop. Capping the
transfers in flight bounds what files take from chat on one worker (and their memory,
places × files.chunk_bytes), whatever the number of clients. Past the cap a transfer is
refused at once rather than queued: a queue would hold requests and their sockets without
bound, and the client's retry after Retry-After is the queue.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from core.errors import Overloaded


class TransferPlaces:
    def __init__(self, places: int) -> None:
        self._free = places
        self.places = places

    @property
    def free(self) -> int:
        return self._free

    def need(self) -> None:
        """Refuses (503) when no place is free, without holding one: a download's place
        is checked as it starts, not held while its bytes go out (holding it across the
        send delayed the next request on the connection: bench/files.py, 1 MB uploads
        8 against 41 MB/s)."""
        if self._free <= 0:
            raise Overloaded(f"{self.places} file transfers at once on this worker: retry later")

    @contextmanager
    def take(self) -> Iterator[None]:
        """Holds one place for the ``with`` body; given back however it ends (an error, a
        client gone mid-transfer, cancellation)."""
        self.need()
        self._free -= 1
        try:
            yield
        finally:
            self._free += 1


class Pace:
    """A worker's optional cap on upload bytes per second (files.upload_kb_s): a token
    bucket shared by its uploads. ``delay`` says how long to wait before the next chunk, so
    files take a bounded share of the CPUs that chat shares (bench/files.py). The bucket
    holds at most one second of bytes: an idle worker may burst that much, never more."""

    def __init__(self, bytes_per_s: int) -> None:
        self.rate = bytes_per_s  # 0: no cap
        self._tokens = float(bytes_per_s)
        self._at: float | None = None

    def delay(self, now: float, size: int) -> float:
        """Takes ``size`` bytes at time ``now`` (seconds, monotonic); the seconds to wait
        before sending them (0.0 when within the rate)."""
        if not self.rate:
            return 0.0
        if self._at is not None:
            self._tokens = min(float(self.rate), self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= size
        return max(0.0, -self._tokens / self.rate)
