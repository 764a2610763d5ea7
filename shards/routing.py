"""Room -> shard -> owner worker: a stable hash every process computes alike."""

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
    """On one host shard k belongs to worker k % workers (ARCHITECTURE §3)."""

    __slots__ = ("shards", "workers", "domain")

    def __init__(self, *, shards: int, workers: int, domain: str) -> None:
        self.shards = shards
        self.workers = workers
        self.domain = domain

    def owner_of(self, room_id: str) -> int:
        return shard_of(f"ma-chan://{self.domain}/{room_id}", self.shards) % self.workers


class RemoteOwners(Protocol):
    """Rooms owned by other workers (the Redis bus)."""

    async def join(self, worker: int, room_id: str, who: Participant) -> JoinResult: ...
    async def part(self, worker: int, room_id: str, session: str) -> None: ...
    async def append_post(
        self, worker: int, room_id: str, session: str, user: str, client_key: str, text: str
    ) -> PostResult: ...
    async def history(
        self, worker: int, room_id: str, user: str, query: HistoryQuery, session: str = ""
    ) -> list[MessageRecord]: ...


class RoomRouter:
    """``RoomAccess`` for the command handler: the shard map decides who serves a room."""

    def __init__(
        self, shard_map: ShardMap, me: int, owner: RoomOwner, remote: RemoteOwners | None
    ) -> None:
        self._map = shard_map
        self._me = me
        self._owner = owner
        self.remote = remote

    def _where(self, room_id: str) -> int:
        worker = self._map.owner_of(room_id)
        if worker != self._me and self.remote is None:
            raise Overloaded(f"worker {worker} is not reachable")
        return worker

    async def join(self, room_id: str, who: Participant) -> JoinResult:
        worker = self._where(room_id)
        if worker == self._me:
            return await self._owner.join(room_id, who)
        assert self.remote is not None
        return await self.remote.join(worker, room_id, who)

    async def part(self, room_id: str, session: str) -> None:
        worker = self._where(room_id)
        if worker == self._me:
            return await self._owner.part(room_id, session)
        assert self.remote is not None
        return await self.remote.part(worker, room_id, session)

    async def append_post(
        self, room_id: str, session: str, user: str, client_key: str, text: str
    ) -> PostResult:
        worker = self._where(room_id)
        if worker == self._me:
            return await self._owner.append_post(room_id, session, user, client_key, text)
        assert self.remote is not None
        return await self.remote.append_post(worker, room_id, session, user, client_key, text)

    async def history(
        self, room_id: str, user: str, query: HistoryQuery, session: str = ""
    ) -> list[MessageRecord]:
        worker = self._where(room_id)
        if worker == self._me:
            return await self._owner.history(room_id, user, query, session)
        assert self.remote is not None
        return await self.remote.history(worker, room_id, user, query, session)

    def online_count(self, room_id: str) -> int | None:
        if self._map.owner_of(room_id) == self._me:
            return self._owner.online_count(room_id)
        return None
