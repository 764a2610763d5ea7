"""shards/waits.py: a bounded wait for an event keeps a cancel that meets a wake-up."""

from __future__ import annotations

import asyncio

from shards.waits import wait_set


async def test_it_answers_whether_the_event_came_within_the_bound() -> None:
    event = asyncio.Event()
    assert await wait_set(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.005, event.set)
    assert await wait_set(event, 5.0) is True


async def test_a_cancel_that_meets_a_wake_up_is_never_lost() -> None:
    """A loop waiting for a wake-up or its period is cancelled while a wake-up comes in,
    at every moment of the wake-up; the loop must end each time (Python 3.11's wait_for
    returned and dropped the cancel when both met)."""
    lost = 0
    for attempt in range(300):
        wake = asyncio.Event()
        rounds = 0

        async def keeper(wake: asyncio.Event) -> None:
            nonlocal rounds
            while True:
                await wait_set(wake, 10.0)
                wake.clear()
                rounds += 1

        task = asyncio.get_running_loop().create_task(keeper(wake))
        await asyncio.sleep(0)  # the keeper waits now
        wake.set()
        for _ in range(attempt % 4):
            await asyncio.sleep(0)
        task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), 0.2)
        except asyncio.CancelledError:
            continue
        except TimeoutError:
            lost += 1  # still looping: the cancel was dropped
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert lost == 0
