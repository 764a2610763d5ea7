"""Group commit: items wait in a bounded queue and are written many per transaction."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from core.errors import Overloaded

log = logging.getLogger(__name__)

T = TypeVar("T")
Done = Callable[[BaseException | None], None]


class CommitStats(Protocol):
    def observe_commit(self, seconds: float, size: int) -> None: ...


class GroupCommitter(Generic[T]):
    """Writes queued items in batches; each item's ``done`` runs after its batch, in order.

    While one transaction runs, new items gather for the next, so the batch size grows
    with the load by itself (MEASUREMENTS: 41 k rows/s one by one, 284 k/s at 1000).
    Posts use it (``ChatStore.append_messages``), and so do compliance events.
    """

    __slots__ = (
        "_write",
        "_max_batch",
        "_max_pending",
        "_pending",
        "_wake",
        "_task",
        "_stats",
        "_closing",
    )

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[None]],
        *,
        max_batch: int = 1000,
        max_pending: int = 20000,
        stats: CommitStats | None = None,
    ) -> None:
        self._write = write
        self._max_batch = max_batch  # beyond ~1000 rows a transaction gains little
        # Items accepted but not yet committed; about 1 s of the fastest store, so a stalled
        # store turns into 503s instead of memory growth.
        self._max_pending = max_pending
        self._pending: list[tuple[T, Done]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stats = stats
        self._closing = False

    @property
    def depth(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        """Commits what is queued, then stops."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        await self._task
        self._task = None

    def submit(self, item: T, done: Done) -> None:
        if self._closing:
            raise Overloaded("not accepting writes: the store writer is stopped")
        if len(self._pending) >= self._max_pending:
            raise Overloaded("commit queue full")
        self._pending.append((item, done))
        self._wake.set()

    async def write(self, item: T) -> None:
        """Submits and waits until the item is durable (raises what the store raised)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done(error: BaseException | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(Overloaded(f"the store failed; retry ({error})"))

        self.submit(item, done)
        await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._commit(batch)
            if self._closing:
                return

    async def _commit(self, batch: list[tuple[T, Done]]) -> None:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            await self._write([item for item, _ in batch])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store failed: nobody in the batch is acknowledged
            log.error("group commit of %d items failed: %s", len(batch), exc)
            error = exc
        if self._stats is not None and error is None:
            self._stats.observe_commit(time.perf_counter() - started, len(batch))
        for _, done in batch:
            try:
                done(error)
            except Exception:  # one faulty callback must not strand the rest of the batch
                log.exception("completion callback failed")
