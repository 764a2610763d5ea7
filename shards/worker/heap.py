"""The worker process's garbage collector: fewer young passes, start-up heap frozen (process
wiring; the collector is process-wide, so only a worker's entry point tunes it)."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def tuned_gc(gen0_threshold: int) -> Iterator[None]:
    """While inside: what start-up built is frozen (gc.freeze, never scanned again) and the
    youngest generation is collected every ``gen0_threshold`` net allocations. On exit the
    process's previous settings come back. 0: Python's settings, untouched."""
    if gen0_threshold <= 0:
        yield
        return
    before = gc.get_threshold()
    # Collect first so the frozen heap holds no garbage: frozen objects are never freed.
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0_threshold, before[1], before[2])
    log.info(
        "gc: %d start-up objects frozen, gen0 threshold %d", gc.get_freeze_count(), gen0_threshold
    )
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
