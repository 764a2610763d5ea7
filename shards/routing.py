"""Room -> shard -> owner worker: a stable hash every process computes alike."""

from __future__ import annotations

import zlib


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
