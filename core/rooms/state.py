"""A loaded room's hot state, as its owner holds it, and how it is read from the store.

The owner (core/rooms/owner.py) is the state's one writer: the roster, the next msgid,
the ring of recent posts that answers most history reads, and the retry keys that make
a re-sent envelope one post.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import msgspec

from core.errors import StoreError
from core.rooms.roster import Roster
from core.store.base import CategoryRecord, ChatStore, MessageRecord, RoomRecord

RETRY_WINDOW_MS = 5 * 60 * 1000  # XCCOS.md §5: a re-sent envelope within 5 minutes is one post
# Retry keys kept per room: 5 minutes of a 30 posts/s room fits; beyond it the oldest go
# first, which only shortens the retry window of the busiest rooms.
MAX_RETRY_KEYS = 10_000


class PostResult(msgspec.Struct, frozen=True, gc=False, tag=True):
    """A durable post's place in its room: its msgid and its time."""

    seq: int
    ts_ms: int


class Pending:
    """A post accepted under a retry key: copies of the same envelope share its future."""

    __slots__ = ("seq", "ts_ms", "future")

    def __init__(self, seq: int, ts_ms: int, future: asyncio.Future[PostResult]) -> None:
        self.seq = seq
        self.ts_ms = ts_ms
        self.future = future


class RoomState:
    __slots__ = (
        "record",
        "category",
        "roster",
        "next_seq",
        "committed_seq",
        "ring",
        "ring_complete",
        "retries",
        "shard",
        "epoch",
        "loaded_s",
    )

    def __init__(
        self,
        record: RoomRecord,
        category: CategoryRecord,
        next_seq: int,
        ring_size: int,
        token: tuple[int, int],
        loaded_s: float,
    ) -> None:
        self.shard, self.epoch = token  # every write of this state carries them
        self.loaded_s = loaded_s
        self.record = record
        self.category = category
        self.roster = Roster()
        self.next_seq = next_seq
        self.committed_seq = next_seq - 1  # newest durable post: a joiner's feed starts here
        self.ring: deque[MessageRecord] = deque(maxlen=ring_size)
        self.ring_complete = False  # the ring holds every stored post of the room
        self.retries: dict[tuple[str, str], Pending] = {}

    def committed(self, record: MessageRecord) -> None:
        """A post is durable: it is the newest a joiner's feed starts from, and in the ring."""
        self.committed_seq = max(self.committed_seq, record.seq)
        if len(self.ring) == self.ring.maxlen:
            self.ring_complete = False  # the oldest post leaves the ring for the store only
        self.ring.append(record)

    def remember(self, key: tuple[str, str], pending: Pending) -> None:
        """Keeps a retry key, and lets go of those older than the window or over the cap."""
        retries = self.retries
        retries.pop(key, None)
        retries[key] = pending
        horizon = pending.ts_ms - RETRY_WINDOW_MS
        while retries:
            oldest_key = next(iter(retries))
            oldest = retries[oldest_key]
            if oldest.ts_ms >= horizon and len(retries) <= MAX_RETRY_KEYS:
                break
            del retries[oldest_key]


async def read_room_state(
    store: ChatStore,
    room_id: str,
    token: tuple[int, int],
    ring_size: int,
    clock: Callable[[], float],
) -> RoomState | None:
    """The room as the store has it (None: no such room), with its newest posts in the
    ring and the retry keys of the window, so a post re-sent across a move of the room is
    still one post."""
    record = await store.get_room(room_id)
    if record is None:
        return None
    category = await store.get_category(record.category_id)
    if category is None:
        raise StoreError(f"room {room_id} names a missing category")
    max_seq = await store.max_seq(room_id)
    if not category.history:
        # Nothing is stored to continue from: msgids start from the clock (µs), so they
        # still increase across restarts (up to a million posts a second).
        max_seq = max(max_seq, int(clock() * 1_000_000))
    state = RoomState(record, category, max_seq + 1, ring_size, token, clock())
    recent = await store.history_last(room_id, ring_size)
    state.ring.extend(recent)
    state.ring_complete = not recent or recent[0].seq == 1
    since = int(clock() * 1000) - RETRY_WINDOW_MS
    for key in await store.recent_client_keys(room_id, since):
        done: asyncio.Future[PostResult] = asyncio.get_running_loop().create_future()
        done.set_result(PostResult(key.seq, key.ts_ms))
        state.retries[(key.author, key.client_key)] = Pending(key.seq, key.ts_ms, done)
    return state
