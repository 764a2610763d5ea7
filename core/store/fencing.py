"""Fencing tokens of a write batch (store layer, ARCHITECTURE §8).

Every post and compliance record a room owner writes carries its shard and the epoch
its lease was granted with. A backend checks the tokens inside the write's own
transaction, so an owner that lost its lease (paused, partitioned) writes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Generic, TypeVar

from core.errors import Fenced
from core.store.base import NewMessage, OutboxEvent

Item = TypeVar("Item", NewMessage, OutboxEvent)


def tokens_of(*batches: Iterable[NewMessage | OutboxEvent]) -> list[tuple[int, int]]:
    """The distinct (shard, epoch) pairs a write must hold; unfenced items (shard -1) none."""
    return sorted(
        {(item.shard, item.epoch) for batch in batches for item in batch if item.shard >= 0}
    )


def check_tokens(tokens: list[tuple[int, int]], current: Mapping[int, int]) -> None:
    """Raises ``Fenced`` naming every shard whose token is not its current epoch."""
    stale = sorted({shard for shard, epoch in tokens if current.get(shard) != epoch})
    if stale:
        raise Fenced(stale)


class FencedWrite(Generic[Item]):
    """A group commit's write whose ``Fenced`` refusal first tells the owner which of the
    tokens it wrote with went stale (it steps down for those shards), then propagates."""

    __slots__ = ("_write", "_stale")

    def __init__(
        self,
        write: Callable[[list[Item]], Awaitable[None]],
        stale: Callable[[list[tuple[int, int]]], None],
    ) -> None:
        self._write: Callable[[list[Item]], Awaitable[None]] = write
        self._stale = stale

    async def __call__(self, batch: list[Item]) -> None:
        try:
            await self._write(batch)
        except Fenced as exc:
            refused = set(exc.shards)
            self._stale([token for token in tokens_of(batch) if token[0] in refused])
            raise
