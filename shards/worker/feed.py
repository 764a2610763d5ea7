"""Per-room order of posts arriving over Redis: drop repeats, fill gaps from the store.

Redis pub/sub keeps order on one connection but loses what is sent while a subscriber
is reconnecting (ARCHITECTURE invariant 2: a gateway that sees a gap fills it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from core.rooms.events import PostEvent
from core.store.base import ChatStore

log = logging.getLogger(__name__)

# Posts held for a room while its gap is being read from the store: about 10 s of a
# busy room. Beyond it the newest are dropped and the next post starts another fill.
MAX_HELD_POSTS = 1000
FILL_BATCH = 500  # posts read from the store per query while filling


class _Feed:
    __slots__ = ("last", "filling", "held")

    def __init__(self, last: int) -> None:
        self.last = last
        self.filling = False
        self.held: list[PostEvent] = []


class RoomFeeds:
    def __init__(self, store: ChatStore, deliver: Callable[[PostEvent], None]) -> None:
        self._store = store
        self._deliver = deliver
        self._feeds: dict[str, _Feed] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.filled = 0  # posts recovered from the store (tests and metrics)

    def start(self, room_id: str, last_seq: int) -> None:
        """The room's newest msgid when a local session joined it (or was re-announced to
        a new owner). A feed behind it reads what it missed from the store: after a
        takeover that is what the dead owner committed but never published."""
        feed = self._feeds.get(room_id)
        if feed is None:
            self._feeds[room_id] = _Feed(last_seq)
        elif not feed.filling and last_seq > feed.last:
            feed.filling = True
            self._spawn_fill(room_id, feed, last_seq)

    def has(self, room_id: str) -> bool:
        return room_id in self._feeds

    def drop(self, room_id: str) -> None:
        self._feeds.pop(room_id, None)

    def on_post(self, event: PostEvent) -> None:
        feed = self._feeds.get(event.room_id)
        if feed is None:
            feed = self._feeds[event.room_id] = _Feed(event.seq - 1)
        if feed.filling:
            if len(feed.held) < MAX_HELD_POSTS:
                feed.held.append(event)
            return
        if event.seq <= feed.last:
            return  # seen already (delivered by a fill)
        if event.seq == feed.last + 1:
            feed.last = event.seq
            self._deliver(event)
            return
        feed.filling = True
        feed.held.append(event)
        self._spawn_fill(event.room_id, feed, 0)

    def _spawn_fill(self, room_id: str, feed: _Feed, upto: int) -> None:
        task = asyncio.get_running_loop().create_task(self._fill(room_id, feed, upto))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fill(self, room_id: str, feed: _Feed, upto: int) -> None:
        """Reads from the store up to the first held post, or through ``upto``."""
        try:
            while True:
                target = feed.held[0].seq if feed.held else upto + 1
                if target <= feed.last + 1:
                    break
                missing = await self._store.history_after(
                    room_id, feed.last, min(FILL_BATCH, target - feed.last - 1)
                )
                progressed = False
                for m in missing:
                    if m.seq >= target or self._feeds.get(room_id) is not feed:
                        break
                    # origin unknown from the store: the author's own session gets it too
                    self._deliver(PostEvent(room_id, m.seq, m.author, m.ts_ms, m.text, "", m.ts_ms))
                    feed.last = m.seq
                    self.filled += 1
                    progressed = True
                if not progressed:
                    break  # the rest is holes (failed commits, no history): nothing to fill
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("filling a gap in room %s failed; delivering what is held", room_id)
        finally:
            feed.filling = False
            held, feed.held = feed.held, []
            for event in held:
                if event.seq > feed.last:
                    feed.last = event.seq
                    self._deliver(event)
