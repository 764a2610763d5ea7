"""Sliced delivery of room events to local sessions: a budget per loop turn, rooms in turn.

A post to a 16,000-person room is 16,000 framings and buffer appends: done in one go it
holds the loop for tens of milliseconds, and every small room's post queued behind it
waits as long (ARCHITECTURE §8a). Here each room has a FIFO of jobs (its events, in
order), and every loop turn serves the rooms with work round-robin, at most
``ROOM_QUANTUM`` deliveries per room per visit and ``TURN_BUDGET`` per turn. A small
room's post goes out in the first turn after it arrives, whatever the big rooms hold.
At the end of each turn ``after_turn`` runs: the worker flushes what the turn queued at
once, instead of one loop turn later.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

log = logging.getLogger(__name__)

# Deliveries (one framing + one buffer append, ~1.5 µs each) per loop turn: about 3 ms
# of work, so sockets are read and flushed at least that often under any burst.
TURN_BUDGET = 2048
# Deliveries per room per visit: 8 rooms with bursts still share one turn.
ROOM_QUANTUM = 256
# Events waiting per room. Each job holds a shared member tuple and one body, so this
# bounds memory to ~2,000 bodies per room; a room that far behind has recipients that
# cannot keep up anyway, and its overflow is counted and dropped (clients fill gaps by
# msgid with bccontext).
MAX_ROOM_JOBS = 2000


class Recipient(Protocol):
    session_id: str

    def deliver(self, room_id: str, body: bytes) -> None: ...


class _Job:
    __slots__ = ("body", "targets", "skip", "pos", "then", "sent_ms")

    def __init__(
        self,
        body: bytes,
        targets: Sequence[Recipient],
        skip: str,
        then: Callable[[], None] | None,
        sent_ms: int,
    ) -> None:
        self.body = body
        self.targets = targets
        self.skip = skip  # the author's own session gets its rpl, not a copy
        self.pos = 0
        self.then = then  # runs once every target has the body (a kick's removal)
        self.sent_ms = sent_ms


class DeliveryQueue:
    """Per-room FIFOs of events for local sessions, served a slice per loop turn."""

    def __init__(
        self,
        on_delivered: Callable[[int, int], None],
        on_dropped: Callable[[str], None],
        *,
        turn_budget: int = TURN_BUDGET,
        room_quantum: int = ROOM_QUANTUM,
        max_room_jobs: int = MAX_ROOM_JOBS,
        after_turn: Callable[[], None] | None = None,
    ) -> None:
        self._rooms: dict[str, deque[_Job]] = {}
        self._ready: deque[str] = deque()  # rooms with jobs, in serving order
        self._scheduled = False
        self._on_delivered = on_delivered  # (deliveries, sent_ms) per slice: the metrics
        self._on_dropped = on_dropped
        self._budget = turn_budget
        self._quantum = room_quantum
        self._max_jobs = max_room_jobs
        self._after_turn = after_turn  # the worker's flush of every connection written to
        self.turns = 0  # loop turns that delivered something (tests, metrics)

    @property
    def pending_rooms(self) -> int:
        return len(self._rooms)

    def push(
        self,
        room_id: str,
        body: bytes,
        targets: Sequence[Recipient],
        *,
        skip: str = "",
        then: Callable[[], None] | None = None,
        sent_ms: int = 0,
    ) -> None:
        """Queues one event for ``targets`` (a snapshot: joiners after now do not get it)."""
        jobs = self._rooms.get(room_id)
        if jobs is None:
            jobs = self._rooms[room_id] = deque()
            self._ready.append(room_id)
        elif len(jobs) >= self._max_jobs:
            self._on_dropped(room_id)
            return
        jobs.append(_Job(body, targets, skip, then, sent_ms))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._turn)

    def _turn(self) -> None:
        self._scheduled = False
        budget = self._budget
        ready = self._ready
        while budget > 0 and ready:
            room_id = ready.popleft()
            jobs = self._rooms[room_id]
            budget -= self._serve(room_id, jobs, min(self._quantum, budget))
            if jobs:
                ready.append(room_id)
            else:
                del self._rooms[room_id]
        self.turns += 1
        if self._after_turn is not None:
            self._after_turn()
        if ready and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._turn)

    def _serve(self, room_id: str, jobs: deque[_Job], quantum: int) -> int:
        """Delivers up to ``quantum`` from the room's head jobs, in order; returns the count."""
        used = 0
        while jobs and used < quantum:
            job = jobs[0]
            targets, body, skip = job.targets, job.body, job.skip
            end = min(len(targets), job.pos + quantum - used)
            delivered = 0
            for i in range(job.pos, end):
                target = targets[i]
                if target.session_id != skip:
                    target.deliver(room_id, body)
                    delivered += 1
            used += max(end - job.pos, 1)  # an empty job (a call) still costs a visit
            job.pos = end
            if delivered and job.sent_ms:
                self._on_delivered(delivered, job.sent_ms)
            if end < len(targets):
                break
            jobs.popleft()
            if job.then is not None:
                try:
                    job.then()
                except Exception:  # a bug in one callback must not stop every room
                    log.exception("after-delivery step of room %s failed", room_id)
        return used
