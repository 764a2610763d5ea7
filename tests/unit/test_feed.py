"""The ordering feed of remote rooms: repeats dropped, gaps filled, holes skipped."""

from __future__ import annotations

import asyncio

from core.rooms.events import PostEvent
from core.store.base import MessageRecord
from shards.worker.feed import RoomFeeds


class Store:
    """Only what RoomFeeds reads: history_after over a fixed set of stored posts."""

    def __init__(self, seqs: list[int]) -> None:
        self.seqs = seqs
        self.queries = 0

    async def history_after(self, room_id: str, seq: int, count: int) -> list[MessageRecord]:
        self.queries += 1
        found = [s for s in self.seqs if s > seq][:count]
        return [
            MessageRecord(room_id=room_id, seq=s, author="a", ts_ms=s, text=str(s)) for s in found
        ]


def post(seq: int) -> PostEvent:
    return PostEvent("r", seq, "a", seq, str(seq), "x", seq)


async def settle(feeds: RoomFeeds) -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_repeats_are_dropped_and_gaps_filled_in_order() -> None:
    got: list[int] = []
    store = Store([1, 2, 3, 4, 5, 6])
    feeds = RoomFeeds(store, lambda e: got.append(e.seq))  # type: ignore[arg-type]
    feeds.start("r", 1)
    feeds.on_post(post(2))
    feeds.on_post(post(2))  # a repeat
    feeds.on_post(post(5))  # 3 and 4 were missed
    feeds.on_post(post(6))  # arrives while the gap is being filled
    await settle(feeds)
    assert got == [2, 3, 4, 5, 6]
    assert feeds.filled == 2


async def test_a_hole_ends_the_fill_instead_of_looping() -> None:
    got: list[int] = []
    store = Store([1, 2, 5])  # 3 and 4 were never stored (failed commit, no history)
    feeds = RoomFeeds(store, lambda e: got.append(e.seq))  # type: ignore[arg-type]
    feeds.start("r", 2)
    feeds.on_post(post(5))
    await settle(feeds)
    assert got == [5]
    assert store.queries == 1
    feeds.on_post(post(6))
    assert got == [5, 6]


async def test_a_lost_last_post_is_filled_when_the_owner_names_a_newer_seq() -> None:
    """The bus lost post 3 (a Redis failover) and no post came after it: the re-announced
    join's answer (last_seq 3) is enough to read it from the store."""
    got: list[int] = []
    store = Store([1, 2, 3])
    feeds = RoomFeeds(store, lambda e: got.append(e.seq))  # type: ignore[arg-type]
    feeds.start("r", 1)
    feeds.on_post(post(2))
    feeds.start("r", 3)  # the re-join after the reconnect
    await settle(feeds)
    assert got == [2, 3]
    assert feeds.filled == 1
    feeds.on_post(post(3))  # a late copy from the bus is a repeat
    feeds.on_post(post(4))
    assert got == [2, 3, 4]


async def test_a_goal_raised_while_filling_is_reached_after_the_held_posts() -> None:
    got: list[int] = []
    store = Store([1, 2, 3, 4, 5, 6, 7])
    feeds = RoomFeeds(store, lambda e: got.append(e.seq))  # type: ignore[arg-type]
    feeds.start("r", 1)
    feeds.on_post(post(4))  # 2 and 3 missed: a fill starts, 4 is held
    feeds.start("r", 7)  # then the owner says 7 exists; 5..7 never came over the bus
    await settle(feeds)
    assert got == [2, 3, 4, 5, 6, 7]


async def test_a_goal_past_a_hole_ends_instead_of_looping() -> None:
    got: list[int] = []
    store = Store([1])  # 2 and 3 were never stored
    feeds = RoomFeeds(store, lambda e: got.append(e.seq))  # type: ignore[arg-type]
    feeds.start("r", 1)
    feeds.start("r", 3)
    await settle(feeds)
    assert got == []
    assert store.queries == 1


async def test_a_feed_behind_a_rejoin_reads_what_it_missed() -> None:
    """After a takeover the new owner says the room is at 5; the dead owner committed 4
    and 5 but never published them: the feed reads them instead of skipping them."""
    got: list[int] = []
    store = Store([1, 2, 3, 4, 5, 6])
    feeds = RoomFeeds(store, lambda e: got.append(e.seq))  # type: ignore[arg-type]
    feeds.start("r", 2)
    feeds.on_post(post(3))
    feeds.start("r", 5)  # the re-announced join's answer
    feeds.on_post(post(6))  # the new owner's first post, while the fill runs
    await settle(feeds)
    assert got == [3, 4, 5, 6]
    feeds.start("r", 6)  # already there: nothing read
    await settle(feeds)
    assert store.queries == 1
