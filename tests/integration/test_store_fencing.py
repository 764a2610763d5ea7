"""Fencing tokens on both backends: a stale owner's write is refused inside its transaction."""

from __future__ import annotations

import asyncio

import pytest

from core.errors import Fenced
from core.store.base import ChatStore, NewMessage, OutboxEvent
from tests.integration.test_store import category, room, seqs


def fenced_post(seq: int, shard: int, epoch: int, room_id: str = "r1") -> NewMessage:
    return NewMessage(
        room_id=room_id, seq=seq, author="sip:a@x", ts_ms=seq, text=f"p{seq}",
        shard=shard, epoch=epoch,
    )  # fmt: skip


async def test_claims_count_up_per_shard(store: ChatStore) -> None:
    assert await store.claim_shards([3, 7]) == {3: 1, 7: 1}
    assert await store.claim_shards([3]) == {3: 2}
    assert await store.claim_shards([]) == {}
    assert await store.claim_shards([7, 9]) == {7: 2, 9: 1}


async def test_a_stale_owner_writes_nothing(store: ChatStore) -> None:
    await store.put_category(category())
    await store.put_room(room("r1", "Lobby"))
    await store.put_room(room("r2", "Other"))
    old = (await store.claim_shards([5]))[5]
    await store.append_messages([fenced_post(1, 5, old)])
    new = (await store.claim_shards([5]))[5]  # another worker took the shard over
    assert new == old + 1
    event = OutboxEvent(kind="CHAT", payload="{}", ts_ms=1, shard=5, epoch=old)
    with pytest.raises(Fenced) as refused:
        # one stale token spoils the whole transaction, the good post of shard 6 too
        await store.append_messages([fenced_post(2, 5, old), fenced_post(1, 6, 0, "r2")], [event])
    assert refused.value.shards == [5, 6]
    with pytest.raises(Fenced):
        await store.add_outbox([event])
    with pytest.raises(Fenced):  # a shard nobody ever claimed has no valid token
        await store.append_messages([fenced_post(2, 8, 1)])
    assert seqs(await store.history_last("r1", 10)) == [1]
    assert seqs(await store.history_last("r2", 10)) == []
    assert await store.outbox_stats() == (0, 0)
    await store.append_messages([fenced_post(2, 5, new)], [OutboxEvent(
        kind="CHAT", payload="{}", ts_ms=2, shard=5, epoch=new)])  # fmt: skip
    assert seqs(await store.history_last("r1", 10)) == [1, 2]
    assert (await store.outbox_stats())[0] == 1
    await store.append_messages([NewMessage(room_id="r1", seq=3, author="a", ts_ms=3, text="x")])
    assert seqs(await store.history_last("r1", 10)) == [1, 2, 3]  # unfenced: admin, one worker


async def test_claims_and_writes_race_safely(store: ChatStore) -> None:
    """Writers holding the token they had and a claimer running at once: every write
    stored is one whose token was current when it committed (no write after the claim)."""
    await store.put_category(category())
    await store.put_room(room("r1", "Lobby"))
    epoch = (await store.claim_shards([1]))[1]
    stored: list[int] = []

    async def writer(start: int) -> None:
        for seq in range(start, start + 200, 2):
            try:
                await store.append_messages([fenced_post(seq, 1, epoch)])
                stored.append(seq)
            except Fenced:
                return

    tasks = [asyncio.ensure_future(writer(1)), asyncio.ensure_future(writer(2))]
    await asyncio.sleep(0.02)
    await store.claim_shards([1])
    after = await store.max_seq("r1")
    await asyncio.gather(*tasks)
    assert await store.max_seq("r1") == after  # nothing got in once the claim committed
    assert sorted(stored) == seqs(await store.history_last("r1", 500))
