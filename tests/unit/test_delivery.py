"""Sliced fan-out (ARCHITECTURE §8a): a budget per loop turn, rooms served in turn."""

from __future__ import annotations

import asyncio

from shards.worker.delivery import DeliveryQueue


class Recipient:
    def __init__(self, session_id: str, log: list[tuple[str, str, bytes]]) -> None:
        self.session_id = session_id
        self._log = log

    def deliver(self, room_id: str, body: bytes) -> None:
        self._log.append((self.session_id, room_id, body))


def _queue(**limits: int) -> tuple[DeliveryQueue, list[tuple[int, int]], list[str]]:
    slices: list[tuple[int, int]] = []
    dropped: list[str] = []
    queue = DeliveryQueue(lambda n, sent: slices.append((n, sent)), dropped.append, **limits)
    return queue, slices, dropped


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_small_room_is_not_behind_a_large_rooms_burst() -> None:
    log: list[tuple[str, str, bytes]] = []
    big = tuple(Recipient(f"b{i}", log) for i in range(10_000))
    small = (Recipient("s0", log),)
    queue, _, _ = _queue(turn_budget=1000, room_quantum=100)
    for n in range(5):  # a burst: five posts to 10,000 people
        queue.push("big", b"burst%d" % n, big, sent_ms=1)
    queue.push("small", b"hello", small, sent_ms=1)
    await _turns(1)
    assert ("s0", "small", b"hello") in log  # in the very first turn
    assert len(log) <= 1000  # one turn did at most its budget
    assert queue.pending_rooms == 1  # the big room still has work


async def test_every_recipient_gets_every_event_in_room_order() -> None:
    log: list[tuple[str, str, bytes]] = []
    members = tuple(Recipient(f"m{i}", log) for i in range(700))
    queue, slices, _ = _queue(turn_budget=256, room_quantum=64)
    for n in range(4):
        queue.push("room", b"%d" % n, members, skip="m3", sent_ms=5)
    for _ in range(200):
        await asyncio.sleep(0)
        if not queue.pending_rooms:
            break
    assert queue.pending_rooms == 0
    assert queue.turns > 4  # sliced over many turns, not done at once
    for i in range(700):
        got = [body for sid, _, body in log if sid == f"m{i}"]
        assert got == ([] if i == 3 else [b"0", b"1", b"2", b"3"])  # the author is skipped
    assert sum(n for n, _ in slices) == 4 * 699


async def test_a_step_after_delivery_runs_after_the_rooms_earlier_events() -> None:
    log: list[tuple[str, str, bytes]] = []
    members = tuple(Recipient(f"m{i}", log) for i in range(300))
    steps: list[int] = []
    queue, _, _ = _queue(turn_budget=100, room_quantum=100)
    queue.push("room", b"post", members)
    queue.push("room", b"", (), then=lambda: steps.append(len(log)))
    await _turns(10)
    assert steps == [300]  # the kick ran once the post had reached all 300


async def test_a_full_room_backlog_drops_and_says_so() -> None:
    log: list[tuple[str, str, bytes]] = []
    queue, _, dropped = _queue(max_room_jobs=3)
    one = (Recipient("a", log),)
    for n in range(5):
        queue.push("room", b"%d" % n, one)
    assert dropped == ["room", "room"]
    await _turns(2)
    assert [body for _, _, body in log] == [b"0", b"1", b"2"]


async def test_a_failing_step_does_not_stop_other_rooms(caplog: object) -> None:
    log: list[tuple[str, str, bytes]] = []
    queue, _, _ = _queue()

    def boom() -> None:
        raise RuntimeError("bug")

    queue.push("bad", b"", (), then=boom)
    queue.push("good", b"x", (Recipient("a", log),))
    await _turns(2)
    assert log == [("a", "good", b"x")]


async def test_each_turn_ends_with_the_after_turn_step_once_its_deliveries_are_done() -> None:
    log: list[tuple[str, str, bytes]] = []
    seen: list[int] = []
    members = tuple(Recipient(f"m{i}", log) for i in range(250))
    queue = DeliveryQueue(
        lambda n, sent: None,
        lambda room: None,
        turn_budget=100,
        room_quantum=100,
        after_turn=lambda: seen.append(len(log)),
    )
    queue.push("room", b"post", members)
    await _turns(5)
    assert seen == [100, 200, 250]  # one flush per turn, after that turn's deliveries
