"""Group commit: posts wait in a bounded queue and are written many per transaction."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from core.errors import Overloaded
from core.store.base import NewMessage

log = logging.getLogger(__name__)

Done = Callable[[BaseException | None], None]


class MessageSink(Protocol):
    async def append_messages(self, messages: list[NewMessage]) -> None: ...


class CommitStats(Protocol):
    def observe_commit(self, seconds: float, size: int) -> None: ...


class GroupCommitter:
    """Writes queued posts in batches; each post's ``done`` runs after its batch, in order.

    While one transaction runs, new posts gather for the next, so the batch size grows
    with the load by itself (MEASUREMENTS: 41 k rows/s one by one, 284 k/s at 1000).
    """

    __slots__ = (
        "_sink",
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
        sink: MessageSink,
        *,
        max_batch: int = 1000,
        max_pending: int = 20000,
        stats: CommitStats | None = None,
    ) -> None:
        self._sink = sink
        self._max_batch = max_batch  # beyond ~1000 rows a transaction gains little
        # Posts accepted but not yet committed; about 1 s of the fastest store, so a stalled
        # store turns into 503s instead of memory growth.
        self._max_pending = max_pending
        self._pending: list[tuple[NewMessage, Done]] = []
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

    def submit(self, message: NewMessage, done: Done) -> None:
        if self._closing:
            raise Overloaded("not accepting posts: the store writer is stopped")
        if len(self._pending) >= self._max_pending:
            raise Overloaded("commit queue full")
        self._pending.append((message, done))
        self._wake.set()

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

    async def _commit(self, batch: list[tuple[NewMessage, Done]]) -> None:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            await self._sink.append_messages([message for message, _ in batch])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store failed: nobody in the batch is acknowledged
            log.error("group commit of %d posts failed: %s", len(batch), exc)
            error = exc
        if self._stats is not None and error is None:
            self._stats.observe_commit(time.perf_counter() - started, len(batch))
        for _, done in batch:
            try:
                done(error)
            except Exception:  # one faulty callback must not strand the rest of the batch
                log.exception("post completion failed")
