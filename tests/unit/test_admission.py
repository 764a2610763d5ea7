"""Every admitted request gives its place back on every path (ARCHITECTURE invariant 4)."""

from __future__ import annotations

import asyncio

import pytest

from shards.worker.admission import Admission


def test_full_queue_refuses_and_counts() -> None:
    rejected: list[int] = []
    admission = Admission(2, lambda: rejected.append(1))
    a, b = admission.admit(), admission.admit()
    assert a is not None and b is not None
    assert admission.admit() is None and rejected == [1]
    a.release()
    assert admission.admit() is not None


def test_with_block_gives_the_place_back_on_an_exception() -> None:
    admission = Admission(1, lambda: None)
    ticket = admission.admit()
    assert ticket is not None
    with pytest.raises(ValueError), ticket:
        raise ValueError("a decoder blew up")
    assert admission.inflight == 0


def test_holds_keep_the_place_until_the_last_release() -> None:
    admission = Admission(1, lambda: None)
    ticket = admission.admit()
    assert ticket is not None
    with ticket:
        session_hold = ticket.hold()
    assert admission.inflight == 1  # the session still holds it
    post_hold = ticket.hold()
    session_hold()
    session_hold()  # a hold's release is one-shot
    assert admission.inflight == 1 and not ticket.done
    post_hold()
    assert admission.inflight == 0 and ticket.done
    with pytest.raises(RuntimeError):
        ticket.hold()  # a spent ticket cannot be revived


async def test_a_cancelled_task_releases_through_its_done_callback() -> None:
    admission = Admission(1, lambda: None)
    ticket = admission.admit()
    assert ticket is not None
    with ticket:
        task = asyncio.get_running_loop().create_task(asyncio.sleep(10))
        task.add_done_callback(ticket.hold())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert admission.inflight == 0
