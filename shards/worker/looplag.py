"""Event-loop lag: a timer that measures how late it fires (the floor of every latency)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# Ticks per second: 10 samples/s see any stall of 100 ms or more, and cost nothing.
INTERVAL_S = 0.1


async def watch_loop_lag(observe: Callable[[float], None], interval_s: float = INTERVAL_S) -> None:
    """Runs until cancelled; ``observe`` gets each tick's lateness in seconds."""
    loop = asyncio.get_running_loop()
    while True:
        expected = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        observe(max(0.0, loop.time() - expected))
