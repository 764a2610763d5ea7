"""Re-announcing this gateway's sessions to room owners that forgot them.

An owner forgets a gateway's sessions when it takes a shard over (it starts with empty
rosters) or when the gateway came back onto the bus (``RoomOwner.drop_gateway``). The
gateway then re-joins each of its sessions there, quietly. Until that lands, the owner
answers the session's posts with 503 (core/rooms/grace.py), so a re-join must land within
that grace: it is retried while the owner is busy, and a burst of thousands is spread
over a bounded number of requests in flight."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from core.errors import Overloaded, PchatError
from core.rooms.events import Participant

log = logging.getLogger(__name__)

# Re-joins in flight at once. A restarted owner may be told of every session of every
# gateway at the same moment; 64 keeps each gateway's share of its 10,000 request places
# (shards/bus.py MAX_SERVING) small and still re-joins thousands of sessions a second.
MAX_IN_FLIGHT = 64
# Waits before each retry of a re-join answered 503 (the owner is loading the room or its
# commit queue is full): 5 attempts over 3.75 s, inside REJOIN_BUDGET_S.
RETRY_WAITS_S = (0.25, 0.5, 1.0, 2.0)
# How long re-joining may take after the owner forgot a session: the retries above and
# their answers. The owner's grace (core/rooms/grace.py) is built from it.
REJOIN_BUDGET_S = 6.0

Join = Callable[[str, Participant], Awaitable[object]]
StillIn = Callable[[str, str], bool]
Sleep = Callable[[float], Awaitable[None]]


def gateway_grace_s(request_timeout_s: float, renew_s: float) -> float:
    """How long an owner answers a dropped gateway's sessions with 503: the time its Forgot
    takes to reach the gateway (one lease round at most), one unanswered request, and the
    re-join's retries."""
    return REJOIN_BUDGET_S + request_timeout_s + renew_s


class Rejoiner:
    """A deduplicated queue of (room, session) re-joins, worked by at most
    ``MAX_IN_FLIGHT`` tasks. Its length is bounded by the gateway's own memberships
    (sessions per worker x rooms per session, both capped by the config)."""

    def __init__(self, join: Join, still_in: StillIn, sleep: Sleep = asyncio.sleep) -> None:
        self._join = join
        self._still_in = still_in  # False: the session left the room (or signed out) since
        self._sleep = sleep
        self._queue: dict[tuple[str, str], Participant] = {}  # in arrival order
        self._tasks: set[asyncio.Task[None]] = set()
        self._working = 0  # tasks started and not yet done with the queue (synchronous count)
        self._failed = 0  # re-joins given up since the queue last ran dry

    @property
    def pending(self) -> int:
        return len(self._queue)

    def add(self, targets: list[tuple[str, Participant]]) -> None:
        """Queues re-joins; one already queued (not yet started) is not queued again. One
        in flight is queued again: the owner may have forgotten it after it landed."""
        for room_id, who in targets:
            self._queue.setdefault((room_id, who.session), who)
        loop = asyncio.get_running_loop()
        for _ in range(min(len(self._queue), MAX_IN_FLIGHT - self._working)):
            self._working += 1
            task = loop.create_task(self._work())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        self._queue.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _work(self) -> None:
        try:
            while self._queue:
                key = next(iter(self._queue))
                who = self._queue.pop(key)
                await self._rejoin(key[0], who)
        finally:
            self._working -= 1
        if not self._working:  # the last one: the burst is over
            if self._failed > 1:
                log.warning("%d re-joins were given up in that burst", self._failed)
            self._failed = 0

    async def _rejoin(self, room_id: str, who: Participant) -> None:
        for attempt in range(len(RETRY_WAITS_S) + 1):
            if not self._still_in(room_id, who.session):
                return
            try:
                await self._join(room_id, who)
                return
            except Overloaded as exc:
                if attempt == len(RETRY_WAITS_S):
                    self._given_up(room_id, who, exc)
                    return
                await self._sleep(RETRY_WAITS_S[attempt])
            except PchatError as exc:  # 403/404: the room changed meanwhile; nothing to redo
                log.info("could not re-announce %s in %s: %s", who.session, room_id, exc)
                return

    def _given_up(self, room_id: str, who: Participant, exc: PchatError) -> None:
        self._failed += 1
        if self._failed == 1:
            log.warning(
                "could not re-announce session %s in room %s after %d tries (%s): its posts "
                "there get 403 until it joins again; check the owner worker's logs and Redis",
                who.session,
                room_id,
                len(RETRY_WAITS_S) + 1,
                exc,
            )
