"""The bus: room commands routed to their owner, room events fanned out to gateways.

A room owned by this worker is served by a direct call; one owned by another worker
is reached over Redis (``RemoteOwners``, many-workers mode). Callers see one interface.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from core.errors import Overloaded
from core.rooms.events import HistoryQuery, Participant, RoomEvent
from core.rooms.owner import JoinResult, PostResult, RoomOwner
from core.store.base import MessageRecord
from shards.routing import ShardMap


class RemoteOwners(Protocol):
    async def join(self, worker: int, room_id: str, who: Participant) -> JoinResult: ...
    async def part(self, worker: int, room_id: str, session: str) -> None: ...
    async def post(
        self, worker: int, room_id: str, session: str, user: str, client_key: str, text: str
    ) -> PostResult: ...
    async def history(
        self, worker: int, room_id: str, user: str, query: HistoryQuery
    ) -> list[MessageRecord]: ...


class RoomRouter:
    """``RoomAccess`` for the command handler: the shard map decides who serves a room."""

    def __init__(
        self, shard_map: ShardMap, me: int, owner: RoomOwner, remote: RemoteOwners | None
    ) -> None:
        self._map = shard_map
        self._me = me
        self._owner = owner
        self._remote = remote

    def _where(self, room_id: str) -> int:
        worker = self._map.owner_of(room_id)
        if worker != self._me and self._remote is None:
            raise Overloaded(f"worker {worker} is not reachable")
        return worker

    async def join(self, room_id: str, who: Participant) -> JoinResult:
        worker = self._where(room_id)
        if worker == self._me:
            return await self._owner.join(room_id, who)
        assert self._remote is not None
        return await self._remote.join(worker, room_id, who)

    async def part(self, room_id: str, session: str) -> None:
        worker = self._where(room_id)
        if worker == self._me:
            return await self._owner.part(room_id, session)
        assert self._remote is not None
        return await self._remote.part(worker, room_id, session)

    async def post(
        self, room_id: str, session: str, user: str, client_key: str, text: str
    ) -> PostResult:
        worker = self._where(room_id)
        if worker == self._me:
            return await (await self._owner.post(room_id, session, user, client_key, text))
        assert self._remote is not None
        return await self._remote.post(worker, room_id, session, user, client_key, text)

    async def history(self, room_id: str, user: str, query: HistoryQuery) -> list[MessageRecord]:
        worker = self._where(room_id)
        if worker == self._me:
            return await self._owner.history(room_id, user, query)
        assert self._remote is not None
        return await self._remote.history(worker, room_id, user, query)

    def online_count(self, room_id: str) -> int | None:
        if self._map.owner_of(room_id) == self._me:
            return self._owner.online_count(room_id)
        return None


class LocalFanout:
    """The owner's ``EventSink`` with one worker: events go straight to the local gateway."""

    def __init__(self, deliver: Callable[[RoomEvent], None]) -> None:
        self._deliver = deliver

    def publish(self, event: RoomEvent) -> None:
        self._deliver(event)
