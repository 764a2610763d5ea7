"""A gateway that comes back onto the bus (a paused worker, a link that dropped) is
forgotten by the owners, then re-announces its sessions (shards/rejoin.py). A post sent in
between gets 503, which the client retries, not 403 (core/rooms/grace.py); once the
re-join lands, it goes through. Two buses on a real redis-server, a real owner and store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from core.config import Settings
from core.errors import Overloaded
from core.rooms.events import Participant, RoomEvent
from core.rooms.owner import OwnerSettings, RoomOwner
from core.store.base import ChatStore
from core.store.batch import GroupCommitter
from shards import wire
from shards.bus import REQUEST_TIMEOUT_S, Fanout, RedisBus
from shards.metrics import Metrics
from shards.redis_clients import bus_connect
from shards.rejoin import gateway_grace_s
from shards.routing import ALL_SHARDS, ShardMap
from tests.integration.test_store import category, room

SHARDS = 8
ALICE = "sip:alice@example.com"
GATEWAY = 1  # the worker whose sessions are forgotten; worker 0 owns every room


class Members:
    """Worker 1's gateway as the bus sees it: its sessions' rooms, nothing delivered."""

    def __init__(self, shard_map: ShardMap) -> None:
        self._shard = shard_map.shard
        self.rooms: dict[str, dict[str, str]] = {}  # room -> session -> user

    def on_event(self, event: RoomEvent) -> None:
        pass

    def on_remote_event(self, event: RoomEvent) -> None:
        pass

    def joined_remote(self, room_id: str, last_seq: int) -> None:
        pass

    def rejoin_targets(self, wanted: Callable[[int], bool]) -> list[tuple[str, Participant]]:
        return [
            (room_id, Participant(session, user, GATEWAY))
            for room_id, members in self.rooms.items()
            if wanted(self._shard(room_id))
            for session, user in members.items()
        ]

    def has_member(self, room_id: str, session: str) -> bool:
        return session in self.rooms.get(room_id, {})


class NoShards:
    def owns(self, shard: int) -> bool:
        return False


def _owner(store: ChatStore, committer: GroupCommitter, bus: RedisBus) -> RoomOwner:
    grace = gateway_grace_s(REQUEST_TIMEOUT_S, renew_s=0.5)  # as the runner sets it in a pool
    return RoomOwner(
        store, committer, Fanout(bus, lambda e: None), OwnerSettings(gateway_grace_s=grace)
    )


async def _until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_a_post_between_the_forget_and_the_rejoin_gets_503_then_lands(
    redis_url: str, store: ChatStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.put_category(category())
    await store.put_room(room("lobby", "Lobby", privacy="open"))
    shard_map = ShardMap(shards=SHARDS, workers=2, domain="example.com")
    connect = bus_connect(Settings(redis_url=redis_url))
    committer: GroupCommitter = GroupCommitter(store.append_messages)
    committer.start()
    owner_bus = RedisBus(redis_url, 0, shard_map, Metrics(), connect)
    gateway_bus = RedisBus(redis_url, GATEWAY, shard_map, Metrics(), connect)
    members = Members(shard_map)
    try:
        await owner_bus.start(_owner(store, committer, owner_bus), Members(shard_map), ALL_SHARDS)
        await owner_bus.serve_shards(list(range(SHARDS)))
        await gateway_bus.start(_owner(store, committer, gateway_bus), members, NoShards())
        members.rooms["lobby"] = {"1.1": ALICE}
        await gateway_bus.join("lobby", Participant("1.1", ALICE, GATEWAY))
        assert (await gateway_bus.append_post("lobby", "1.1", ALICE, "k1", "one")).seq == 1

        # Worker 1 comes back onto the bus (as after a pause or a dropped link): the owner
        # forgets its sessions and says so; worker 1 then re-joins them. The post is sent
        # before the owner's Forgot can reach worker 1, so it lands before the re-join.
        await gateway_bus.announce(wire.Announce(GATEWAY))
        with pytest.raises(Overloaded):
            await gateway_bus.append_post("lobby", "1.1", ALICE, "k2", "two")

        async def posted() -> int:
            for _ in range(100):
                try:
                    return (await gateway_bus.append_post("lobby", "1.1", ALICE, "k2", "two")).seq
                except Overloaded:
                    await asyncio.sleep(0.05)  # the client's retry
            raise AssertionError("the re-join never landed")

        assert await asyncio.wait_for(posted(), 10.0) == 2
        history = await store.history_last("lobby", 5)
        assert [m.text for m in history] == ["one", "two"]
    finally:
        await gateway_bus.stop()
        await owner_bus.stop()
        await committer.stop()
