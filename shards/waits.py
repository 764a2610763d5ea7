"""Waiting for an event with a bound, without losing a cancel.

Python 3.11's ``asyncio.wait_for`` returns normally when its awaitable finishes in the
same loop turn as a cancel of the waiting task, and the cancel is gone: a loop that
waits for a wake-up or its period that way goes on for ever after a shutdown cancelled
it while a wake-up came in. ``asyncio.timeout`` keeps the cancel.
"""

from __future__ import annotations

import asyncio
import contextlib


async def wait_set(event: asyncio.Event, timeout_s: float) -> bool:
    """Waits until ``event`` is set or ``timeout_s`` passed; whether it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()
