"""ThreadLane: calls run in order on one thread; results, errors and cancellation."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from core.store.thread_lane import LaneClosed, ThreadLane


async def test_calls_run_in_order_on_one_thread() -> None:
    lane = ThreadLane("test-lane")
    seen: list[tuple[int, str]] = []

    def record(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * 2

    try:
        results = await asyncio.gather(*(lane.call(record, i) for i in range(200)))
    finally:
        lane.stop()
    assert results == [i * 2 for i in range(200)]
    assert [i for i, _ in seen] == list(range(200))
    assert {name for _, name in seen} == {"test-lane"}


async def test_exception_reaches_the_caller_and_the_lane_goes_on() -> None:
    lane = ThreadLane("test-lane")

    def fail() -> None:
        raise ValueError("boom")

    try:
        with pytest.raises(ValueError, match="boom"):
            await lane.call(fail)
        assert await lane.call(len, "abc") == 3
    finally:
        lane.stop()


async def test_a_cancelled_caller_does_not_break_later_results() -> None:
    lane = ThreadLane("test-lane")
    release = threading.Event()
    try:
        slow = lane.call(release.wait, 5.0)
        waiter = asyncio.ensure_future(slow)
        await asyncio.sleep(0)
        waiter.cancel()
        later = lane.call(len, "four")
        release.set()
        assert await later == 4
        assert slow.cancelled()
    finally:
        lane.stop()


async def test_results_settle_on_the_loop_only() -> None:
    """Calls that finish while the loop is blocked settle when it runs, all of them."""
    lane = ThreadLane("test-lane")
    try:
        futures = [lane.call(int, str(i)) for i in range(50)]
        time.sleep(0.2)  # the loop is busy; the thread finishes every call meanwhile
        assert not any(f.done() for f in futures)  # nothing settles off the loop
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert all(f.done() for f in futures)
        assert [f.result() for f in futures] == list(range(50))
    finally:
        lane.stop()


async def test_stop_runs_what_is_queued_then_refuses_calls() -> None:
    lane = ThreadLane("test-lane")
    done: list[int] = []
    queued = [lane.call(done.append, i) for i in range(10)]
    lane.stop()
    assert done == list(range(10))
    await asyncio.gather(*queued)
    with pytest.raises(LaneClosed):
        lane.call(len, "x")
