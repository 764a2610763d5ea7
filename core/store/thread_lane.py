"""One thread that runs a store's calls in order, with wake-ups shared between calls.

``run_in_executor`` pays, per call, a ``concurrent.futures.Future`` (a Condition and
an RLock), a chained asyncio future and one wake-up of the event loop. A sign-in makes
about six store reads, so at a thousand sign-ins a second those hand-offs cost more
than the SQL. Here a call is a tuple in a deque; the thread wakes only when it was
idle, and the loop is woken once for all the results that finished while it was busy.
Each result is still handed back as soon as its call returns (no waiting for a batch).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar, TypeVarTuple

_Ts = TypeVarTuple("_Ts")
_T = TypeVar("_T")

_Call = tuple["asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]
_Result = tuple["asyncio.Future[Any]", BaseException | None, Any]


class LaneClosed(RuntimeError):
    """A call made after `ThreadLane.stop`."""


class ThreadLane:
    """Calls from one event loop, run one after another on one thread of their own.

    The deque of calls is not capped here: every entry is a coroutine awaiting its
    result, and those are bounded where work is admitted (the admission queue, the
    group commit's batch, the per-connection limits).
    """

    def __init__(self, name: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._calls: deque[_Call] = deque()
        self._results: list[_Result] = []
        self._thread_idle = False
        self._settle_due = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[*_Ts], _T], *args: *_Ts) -> asyncio.Future[_T]:
        """``fn(*args)`` on the lane's thread; its result or exception on the future."""
        future: asyncio.Future[_T] = self._loop.create_future()
        with self._lock:
            if self._stopping:
                raise LaneClosed("the store's thread is stopped")
            self._calls.append((future, fn, args))
            if self._thread_idle:
                self._thread_idle = False
                self._wake.notify()
        return future

    def stop(self, wait: bool = True) -> None:
        """No more calls: the thread runs what is queued, then ends. With ``wait`` it
        is joined here (quick when the last call was awaited: it is idle by then)."""
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if wait:
            self._thread.join()

    # -- the lane's thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._calls:
                    if self._stopping:
                        return
                    self._thread_idle = True
                    self._wake.wait()
                    self._thread_idle = False
                future, fn, args = self._calls.popleft()
            try:
                self._done((future, None, fn(*args)))
            except BaseException as exc:  # handed to the caller, who decides
                self._done((future, exc, None))

    def _done(self, result: _Result) -> None:
        with self._lock:
            self._results.append(result)
            if self._settle_due:
                return  # the loop has not run the last wake-up yet: it takes this one too
            self._settle_due = True
        try:
            self._loop.call_soon_threadsafe(self._settle)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    # -- the loop's side ----------------------------------------------------------------

    def _settle(self) -> None:
        with self._lock:
            results, self._results = self._results, []
            self._settle_due = False
        for future, exc, value in results:
            if future.cancelled():  # the caller gave up; the call ran all the same
                continue
            if exc is None:
                future.set_result(value)
            else:
                future.set_exception(exc)
