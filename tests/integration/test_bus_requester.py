"""The file service's side of the bus (shards/bus_client.py RequesterBus): it gets owners'
answers on its own reply channel, and never announces itself, so an owner forgets no
gateway (drop_gateway, Forgot) because of it. Real redis-server (one, or a Redis Cluster),
a real owner and store."""

from __future__ import annotations

import asyncio

import pytest

from core.config import MAX_WORKERS_PER_HOST, Settings
from core.rooms.owner import FILE_POSTER, OwnerSettings, RoomOwner
from core.store.base import ChatStore
from core.store.batch import GroupCommitter
from shards import wire
from shards.bus import Fanout, RedisBus
from shards.bus_client import RequesterBus, file_service_node
from shards.metrics import Metrics
from shards.placement import node_id
from shards.redis_clients import bus_connect
from shards.routing import ALL_SHARDS, ShardMap
from tests.integration.test_bus_rejoin import Members
from tests.integration.test_store import category, room

SHARDS = 8
ALICE = "sip:alice@example.com"


class WatchedOwner(RoomOwner):
    """A real owner that notes which gateways it was told to forget."""

    dropped: list[int]

    def drop_gateway(self, gateway: int) -> None:
        self.dropped.append(gateway)
        super().drop_gateway(gateway)


@pytest.fixture(params=["redis", "cluster"])
def bus_settings(request: pytest.FixtureRequest, redis_url: str) -> Settings:
    if request.param == "redis":
        return Settings(redis_url=redis_url)
    nodes = request.getfixturevalue("redis_cluster")
    return Settings(redis_url=nodes.url, redis_cluster=True, redis_cluster_seeds=nodes.seeds)


def test_the_service_id_is_no_workers() -> None:
    workers = {
        wire.reply_channel(node_id(host, index))
        for host in (0, 1, 7, 2**31 // MAX_WORKERS_PER_HOST - 2)
        for index in (0, 1, MAX_WORKERS_PER_HOST - 1)
    }
    services = {wire.reply_channel(file_service_node(host)) for host in (0, 1, 7, 2000)}
    assert len(services) == 4 and not workers & services


async def test_a_requester_gets_answers_and_is_never_announced(
    bus_settings: Settings, store: ChatStore
) -> None:
    await store.put_category(category())
    await store.put_room(room("lobby", "Lobby", privacy="open"))
    shard_map = ShardMap(shards=SHARDS, workers=2, domain="example.com")
    connect = bus_connect(bus_settings)
    url = bus_settings.effective_redis_url
    committer: GroupCommitter = GroupCommitter(store.append_messages)
    committer.start()
    owner_bus = RedisBus(url, 0, shard_map, Metrics(), connect)
    owner = WatchedOwner(store, committer, Fanout(owner_bus, lambda e: None), OwnerSettings())
    owner.dropped = []
    me = file_service_node(0)
    requester = RequesterBus(url, me, shard_map, Metrics(), connect)
    control: list[wire.Control] = []
    watcher = await connect(lambda _c, data: control.append(wire.control_decoder.decode(data)))
    try:
        await watcher.subscribe(wire.CONTROL_CHANNEL)
        await owner_bus.start(owner, Members(shard_map), ALL_SHARDS)
        await owner_bus.serve_shards(list(range(SHARDS)))
        await requester.start(timeout_s=10.0)
        assert requester.up
        result = await requester.append_post("lobby", FILE_POSTER, ALICE, "file:f1", "a file")
        assert result.seq == 1
        assert [m.text for m in await store.history_last("lobby", 5)] == ["a file"]
        # What the control channel carried meanwhile reached the watcher and the owner.
        await owner_bus.announce(wire.Released(0, []))
        deadline = asyncio.get_running_loop().time() + 5.0
        while not any(isinstance(m, wire.Released) for m in control):
            assert asyncio.get_running_loop().time() < deadline, "control channel not watched"
            await asyncio.sleep(0.02)
        assert [m for m in control if m.worker == me] == []
        assert owner.dropped == []
    finally:
        watcher.close()
        await requester.stop()
        await owner_bus.stop()
        await committer.stop()
