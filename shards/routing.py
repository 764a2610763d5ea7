"""Room -> shard -> owner: a stable hash every process computes alike, and the leases
that say which worker serves a shard now (shards/ownership.py)."""

from __future__ import annotations

import zlib
from typing import Protocol

from core.errors import Overloaded
from core.rooms.events import HistoryQuery, Participant
from core.rooms.owner import JoinResult, PostResult, RoomOwner
from core.store.base import MessageRecord


def shard_of(room_uri: str, shards: int) -> int:
    """crc32, never hash(): Python's str hash differs between processes."""
    return zlib.crc32(room_uri.encode()) % shards


class ShardMap:
    """Room -> shard; on one host shard k prefers worker k % workers (ARCHITECTURE §3)."""

    __slots__ = ("shards", "workers", "domain")

    def __init__(self, *, shards: int, workers: int, domain: str) -> None:
        self.shards = shards
        self.workers = workers
        self.domain = domain

    def shard(self, room_id: str) -> int:
        return shard_of(f"ma-chan://{self.domain}/{room_id}", self.shards)

    def owner_of(self, room_id: str) -> int:
        """The worker a single host gives the room to (shards/placement.py agrees)."""
        return self.shard(room_id) % self.workers


class Ownership(Protocol):
    """Which shards this worker serves right now (``ShardKeeper``; ``ALL_SHARDS`` alone)."""

    def owns(self, shard: int) -> bool: ...


class _AllShards:
    """One worker in the pool: every shard is its own, no leases."""

    def owns(self, shard: int) -> bool:
        return True


ALL_SHARDS: Ownership = _AllShards()


class RemoteOwners(Protocol):
    """Rooms served by other workers (the Redis bus finds the lease holder)."""

    async def join(self, room_id: str, who: Participant, quiet: bool = False) -> JoinResult: ...
    async def part(self, room_id: str, session: str) -> None: ...
    async def append_post(
        self, room_id: str, session: str, user: str, client_key: str, text: str
    ) -> PostResult: ...
    async def history(
        self, room_id: str, user: str, query: HistoryQuery, session: str = ""
    ) -> list[MessageRecord]: ...


class RoomRouter:
    """``RoomAccess`` for the command handler: the shard's lease decides who serves a room."""

    def __init__(
        self,
        shard_map: ShardMap,
        ownership: Ownership,
        owner: RoomOwner,
        remote: RemoteOwners | None,
    ) -> None:
        self._map = shard_map
        self._ownership = ownership
        self._owner = owner
        self.remote = remote

    def _remote(self, room_id: str) -> RemoteOwners | None:
        """None: served here; else the way to the owner."""
        shard = self._map.shard(room_id)
        if self._ownership.owns(shard):
            return None
        if self.remote is None:
            raise Overloaded(f"shard {shard} is not served now")
        return self.remote

    async def join(self, room_id: str, who: Participant, quiet: bool = False) -> JoinResult:
        remote = self._remote(room_id)
        if remote is None:
            return await self._owner.join(room_id, who, quiet=quiet)
        return await remote.join(room_id, who, quiet)

    async def part(self, room_id: str, session: str) -> None:
        remote = self._remote(room_id)
        if remote is None:
            return await self._owner.part(room_id, session)
        return await remote.part(room_id, session)

    async def append_post(
        self, room_id: str, session: str, user: str, client_key: str, text: str
    ) -> PostResult:
        remote = self._remote(room_id)
        if remote is None:
            return await self._owner.append_post(room_id, session, user, client_key, text)
        return await remote.append_post(room_id, session, user, client_key, text)

    async def history(
        self, room_id: str, user: str, query: HistoryQuery, session: str = ""
    ) -> list[MessageRecord]:
        remote = self._remote(room_id)
        if remote is None:
            return await self._owner.history(room_id, user, query, session)
        return await remote.history(room_id, user, query, session)

    def online_count(self, room_id: str) -> int | None:
        if self._ownership.owns(self._map.shard(room_id)):
            return self._owner.online_count(room_id)
        return None
