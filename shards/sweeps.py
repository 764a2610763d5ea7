"""A sweep that runs for the life of a process: one page at a time (core/files/stale.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from core.files.stale import Page, Rounds

log = logging.getLogger(__name__)


async def sweep_forever(sweep: Callable[[str], Awaitable[Page]], what: str) -> None:
    """Calls ``sweep(after)`` page after page, round after round, until cancelled. A
    sweep is housekeeping: a failure is logged and the round starts again later, while
    serving goes on."""
    rounds = Rounds()
    while True:
        try:
            page = await sweep(rounds.after)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s sweep failed; the next round tries again", what)
            page = Page([], "")
        rounds.done(page, time.monotonic())
        await asyncio.sleep(max(0.0, rounds.due - time.monotonic()))
