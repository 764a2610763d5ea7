"""A worker process tunes its garbage collector once started (shards/worker/heap.py)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal

import msgspec

from core.config import Settings
from shards.worker import runner
from shards.worker.heap import tuned_gc


async def test_a_serving_worker_freezes_its_start_up_heap_and_collects_young_objects_less_often(
    settings: Settings,
) -> None:
    before = gc.get_threshold()
    settings = msgspec.structs.replace(settings, gc_gen0_threshold=20_000)
    serving = asyncio.ensure_future(runner._serve_until_signal(settings, 0, ""))
    try:
        for _ in range(200):  # the worker is started when its collector is tuned
            if gc.get_threshold()[0] == 20_000:
                break
            await asyncio.sleep(0.05)
        assert gc.get_threshold() == (20_000, before[1], before[2])
        assert gc.get_freeze_count() > 10_000  # the modules and the worker's objects
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # what the supervisor sends; the worker stops
        await asyncio.wait_for(serving, 30)
    assert gc.get_threshold() == before  # given back on the way out
    assert gc.get_freeze_count() == 0


def test_zero_leaves_the_collector_as_python_set_it() -> None:
    before = gc.get_threshold()
    with tuned_gc(0):
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0
