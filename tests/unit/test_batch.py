"""Unit tests for core/store/batch.py: group commit with a fake sink (no store, no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from core.errors import Overloaded, PchatError
from core.store.base import NewMessage
from core.store.batch import GroupCommitter


class FakeSink:
    """Records each batch; can fail chosen calls or hold a call until ``gate`` is set."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []  # seqs of each stored batch
        self.calls = 0
        self.failures: dict[int, Exception] = {}  # call number (from 1) -> error to raise
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()  # set when a call has started

    async def append_messages(self, messages: list[NewMessage]) -> None:
        self.calls += 1
        call = self.calls
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if call in self.failures:
            raise self.failures[call]
        self.batches.append([m.seq for m in messages])


class Stats:
    def __init__(self) -> None:
        self.commits: list[int] = []

    def observe_commit(self, seconds: float, size: int) -> None:
        assert seconds >= 0
        self.commits.append(size)


class Dones:
    """done callbacks that record (seq, error) in the order they run."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, BaseException | None]] = []

    def __call__(self, seq: int) -> Callable[[BaseException | None], None]:
        return lambda error: self.calls.append((seq, error))

    @property
    def seqs(self) -> list[int]:
        return [seq for seq, _ in self.calls]


def _msg(seq: int) -> NewMessage:
    return NewMessage(room_id="r", seq=seq, author="sip:a@example.com", ts_ms=seq, text=f"m{seq}")


async def _settle(rounds: int = 10) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def _until(predicate: Callable[[], bool], timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0)


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


@pytest.fixture
def dones() -> Dones:
    return Dones()


@pytest.fixture
async def committer(sink: FakeSink) -> AsyncIterator[GroupCommitter]:
    committer = GroupCommitter(sink.append_messages)
    committer.start()
    yield committer
    if sink.gate is not None:
        sink.gate.set()
    await committer.stop()


async def test_one_post_is_committed_then_done(
    committer: GroupCommitter, sink: FakeSink, dones: Dones
) -> None:
    seen_at_done: list[list[list[int]]] = []

    def done(error: BaseException | None) -> None:
        seen_at_done.append([list(b) for b in sink.batches])
        dones(1)(error)

    committer.submit(_msg(1), done)
    assert dones.calls == []  # never synchronously
    await _until(lambda: bool(dones.calls))
    assert dones.calls == [(1, None)]
    assert seen_at_done == [[[1]]]  # stored before done ran


async def test_posts_gather_while_a_commit_is_in_flight(
    committer: GroupCommitter, sink: FakeSink, dones: Dones
) -> None:
    sink.gate = asyncio.Event()
    committer.submit(_msg(1), dones(1))
    await asyncio.wait_for(sink.entered.wait(), 2)
    for seq in (2, 3, 4):
        committer.submit(_msg(seq), dones(seq))
    await _settle()
    assert sink.calls == 1  # the second batch waits for the first
    assert committer.depth == 3
    assert dones.calls == []  # nothing is acknowledged before its commit
    sink.gate.set()
    await _until(lambda: len(dones.calls) == 4)
    assert sink.batches == [[1], [2, 3, 4]]
    assert committer.depth == 0


async def test_batches_are_cut_at_max_batch(sink: FakeSink, dones: Dones) -> None:
    committer = GroupCommitter(sink.append_messages, max_batch=2)
    for seq in range(1, 6):
        committer.submit(_msg(seq), dones(seq))
    committer.start()
    await _until(lambda: len(dones.calls) == 5)
    await committer.stop()
    assert sink.batches == [[1, 2], [3, 4], [5]]


async def test_done_callbacks_run_in_submission_order(
    committer: GroupCommitter, sink: FakeSink, dones: Dones
) -> None:
    sink.gate = asyncio.Event()
    committer.submit(_msg(1), dones(1))
    await asyncio.wait_for(sink.entered.wait(), 2)
    for seq in range(2, 8):
        committer.submit(_msg(seq), dones(seq))
    sink.gate.set()
    await _until(lambda: len(dones.calls) == 7)
    assert dones.seqs == [1, 2, 3, 4, 5, 6, 7]
    assert [error for _, error in dones.calls] == [None] * 7


async def test_a_batch_done_waits_for_the_previous_batch(
    committer: GroupCommitter, sink: FakeSink, dones: Dones
) -> None:
    sink.gate = asyncio.Event()
    committer.submit(_msg(1), dones(1))
    await asyncio.wait_for(sink.entered.wait(), 2)
    committer.submit(_msg(2), dones(2))
    await _settle()
    assert dones.calls == []
    sink.gate.set()
    await _until(lambda: len(dones.calls) == 2)
    assert dones.seqs == [1, 2]


async def test_failure_reaches_every_done_of_the_batch_and_the_next_batch_commits(
    committer: GroupCommitter, sink: FakeSink, dones: Dones
) -> None:
    boom = RuntimeError("disk full")
    sink.failures[1] = boom
    sink.gate = asyncio.Event()
    committer.submit(_msg(1), dones(1))
    await asyncio.wait_for(sink.entered.wait(), 2)
    sink.gate.set()
    # 2 and 3 are submitted while batch 1 is failing: they form the next batch.
    committer.submit(_msg(2), dones(2))
    committer.submit(_msg(3), dones(3))
    await _until(lambda: len(dones.calls) == 3)
    assert dones.calls[0] == (1, boom)
    assert dones.calls[1:] == [(2, None), (3, None)]
    assert sink.batches == [[2, 3]]


async def test_failure_of_a_multi_post_batch_fails_each_post(sink: FakeSink, dones: Dones) -> None:
    boom = OSError("io error")
    sink.failures[1] = boom
    committer = GroupCommitter(sink.append_messages)
    for seq in (1, 2, 3):
        committer.submit(_msg(seq), dones(seq))
    committer.start()
    await _until(lambda: len(dones.calls) == 3)
    committer.submit(_msg(4), dones(4))
    await _until(lambda: len(dones.calls) == 4)
    await committer.stop()
    assert dones.calls == [(1, boom), (2, boom), (3, boom), (4, None)]
    assert sink.batches == [[4]]


async def test_a_raising_done_does_not_strand_the_rest(
    committer: GroupCommitter, dones: Dones
) -> None:
    def bad(error: BaseException | None) -> None:
        raise ValueError("callback bug")

    committer.submit(_msg(1), dones(1))
    committer.submit(_msg(2), bad)
    committer.submit(_msg(3), dones(3))
    await _until(lambda: len(dones.calls) == 2)
    assert dones.seqs == [1, 3]
    committer.submit(_msg(4), dones(4))  # the committer is still running
    await _until(lambda: len(dones.calls) == 3)


async def test_stats_see_successful_commits_only(sink: FakeSink, dones: Dones) -> None:
    stats = Stats()
    sink.failures[2] = RuntimeError("once")
    committer = GroupCommitter(sink.append_messages, stats=stats)
    committer.submit(_msg(1), dones(1))
    committer.submit(_msg(2), dones(2))
    committer.start()
    await _until(lambda: len(dones.calls) == 2)
    committer.submit(_msg(3), dones(3))
    await _until(lambda: len(dones.calls) == 3)
    committer.submit(_msg(4), dones(4))
    await _until(lambda: len(dones.calls) == 4)
    await committer.stop()
    assert sink.batches == [[1, 2], [4]]
    assert stats.commits == [2, 1]


# -- bounds


async def test_max_pending_raises_overloaded(sink: FakeSink, dones: Dones) -> None:
    committer = GroupCommitter(sink.append_messages, max_pending=3)
    for seq in (1, 2, 3):
        committer.submit(_msg(seq), dones(seq))
    assert committer.depth == 3
    with pytest.raises(Overloaded):
        committer.submit(_msg(4), dones(4))
    assert committer.depth == 3
    committer.start()
    await _until(lambda: len(dones.calls) == 3)
    committer.submit(_msg(5), dones(5))  # room again once the queue drained
    await committer.stop()
    assert sink.batches == [[1, 2, 3], [5]]
    assert 4 not in dones.seqs  # a refused post is never completed


async def test_max_pending_counts_queued_posts_not_the_one_in_flight(
    sink: FakeSink, dones: Dones
) -> None:
    sink.gate = asyncio.Event()
    committer = GroupCommitter(sink.append_messages, max_pending=2)
    committer.start()
    committer.submit(_msg(1), dones(1))
    await asyncio.wait_for(sink.entered.wait(), 2)
    assert committer.depth == 0
    committer.submit(_msg(2), dones(2))
    committer.submit(_msg(3), dones(3))
    with pytest.raises(Overloaded) as info:
        committer.submit(_msg(4), dones(4))
    assert info.value.sip_status == 503
    sink.gate.set()
    await committer.stop()
    assert sink.batches == [[1], [2, 3]]
    assert dones.seqs == [1, 2, 3]


# -- stop


async def test_stop_commits_what_is_queued(sink: FakeSink, dones: Dones) -> None:
    committer = GroupCommitter(sink.append_messages)
    committer.start()
    for seq in (1, 2, 3):
        committer.submit(_msg(seq), dones(seq))
    await committer.stop()
    assert sink.batches == [[1, 2, 3]]
    assert dones.seqs == [1, 2, 3]
    assert committer.depth == 0


async def test_stop_during_a_commit_waits_and_commits_the_rest(
    sink: FakeSink, dones: Dones
) -> None:
    sink.gate = asyncio.Event()
    committer = GroupCommitter(sink.append_messages, max_batch=2)
    committer.start()
    committer.submit(_msg(1), dones(1))
    await asyncio.wait_for(sink.entered.wait(), 2)
    for seq in (2, 3, 4):
        committer.submit(_msg(seq), dones(seq))
    stopping = asyncio.ensure_future(committer.stop())
    await _settle()
    assert not stopping.done()  # held by the commit in flight
    sink.gate.set()
    await asyncio.wait_for(stopping, 2)
    assert sink.batches == [[1], [2, 3], [4]]
    assert dones.seqs == [1, 2, 3, 4]


async def test_stop_twice_is_harmless(sink: FakeSink) -> None:
    committer = GroupCommitter(sink.append_messages)
    committer.start()
    await committer.stop()
    await committer.stop()
    assert sink.calls == 0  # an idle committer writes nothing


async def test_submit_after_stop_is_refused_or_completed(sink: FakeSink, dones: Dones) -> None:
    committer = GroupCommitter(sink.append_messages)
    committer.start()
    await committer.stop()
    # Queued with no task left to commit it, its done would never run and a post would hang.
    try:
        committer.submit(_msg(1), dones(1))
    except PchatError:
        return
    await _settle(50)
    assert dones.seqs == [1]
