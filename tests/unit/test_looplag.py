"""The loop-lag probe reports a stall of the loop as the time its timer came late."""

from __future__ import annotations

import asyncio
import time

from shards.worker.looplag import watch_loop_lag


async def test_a_blocked_loop_shows_as_lag() -> None:
    seen: list[float] = []
    task = asyncio.get_running_loop().create_task(watch_loop_lag(seen.append, 0.01))
    await asyncio.sleep(0.05)
    time.sleep(0.2)  # a handler that holds the loop for 200 ms
    await asyncio.sleep(0.05)
    task.cancel()
    assert seen and max(seen) >= 0.15
    assert min(seen) < 0.05  # the ticks around it were on time
