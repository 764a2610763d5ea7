"""What the shard keeper's decisions mean for a worker: the ``OwnerHooks`` on the bus
and the room owner (ARCHITECTURE §8: takeover, handover, a dead or paused worker)."""

from __future__ import annotations

import logging

from core.rooms.owner import RoomOwner
from shards import wire
from shards.bus import RedisBus

log = logging.getLogger(__name__)


class ShardHooks:
    """Takes over: subscribe, then announce (gateways re-announce their sessions there).
    Steps down: unsubscribe and forget the rooms at once, before anybody else may serve
    them, so this worker never answers for a shard it no longer holds."""

    def __init__(self, bus: RedisBus, owner: RoomOwner, node: int) -> None:
        self._bus = bus
        self._owner = owner
        self._node = node

    async def acquired(self, shards: list[int]) -> None:
        await self._bus.serve_shards(shards)
        await self._bus.announce(wire.Acquired(self._node, shards))

    def lost(self, shards: list[int], why: str) -> None:
        self._bus.stop_serving(shards)
        self._owner.drop_shards(set(shards))

    async def released(self, shards: list[int]) -> None:
        await self._bus.announce(wire.Released(self._node, shards))

    def gone(self, nodes: set[int]) -> None:
        for node in nodes:
            log.info("worker %d is gone: its sessions leave the rosters here", node)
            self._owner.drop_gateway(node)

    async def stale(self) -> None:
        log.warning("node %d was paused past its leases: re-announcing its sessions", self._node)
        await self._bus.announce(wire.Announce(self._node))
