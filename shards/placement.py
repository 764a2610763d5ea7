"""Which worker of the pool should own each shard, from the workers alive right now.

Pure: the shard keeper (shards/ownership.py) feeds it the live workers it read from
Redis. Two levels, so that one host is exactly ARCHITECTURE §3's layout:

* host: rendezvous hashing (the host with the highest score of shard and host wins), so a
  host that joins or leaves moves only its own share, about 1/hosts of the shards;
* worker: shard k goes to worker k % workers of that host, as on a single host. While that
  worker is down (restarting, paused) a live worker of the same host stands in.
"""

from __future__ import annotations

from collections.abc import Mapping

from core.config import MAX_WORKERS_PER_HOST


def _score(shard: int, host: int) -> int:
    """A well-mixed 32-bit score (murmur3's finaliser over shard and host): crc32 alone
    is linear, and gave one of three hosts half the shards."""
    x = (shard * 0x9E3779B1 + host * 0x85EBCA77 + 0x27D4EB2F) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & 0xFFFFFFFF
    return x ^ (x >> 16)


def node_id(host: int, index: int) -> int:
    """A worker's pool-wide id: on the bus, in rosters, in session ids."""
    return host * MAX_WORKERS_PER_HOST + index


def host_of(node: int) -> int:
    return node // MAX_WORKERS_PER_HOST


class Placement:
    """Targets for every shard given the live workers (node -> its host's worker count)."""

    __slots__ = ("_hosts", "_nodes", "_standins")

    def __init__(self, live: Mapping[int, int]) -> None:
        self._nodes = frozenset(live)
        self._hosts: dict[int, int] = {}  # host -> its configured worker count
        standins: dict[int, list[int]] = {}
        for node, workers in live.items():
            self._hosts[host_of(node)] = workers
            standins.setdefault(host_of(node), []).append(node)
        self._standins = {host: sorted(nodes) for host, nodes in standins.items()}

    @property
    def nodes(self) -> frozenset[int]:
        return self._nodes

    def target(self, shard: int) -> tuple[int, int] | None:
        """(node, own): the worker that should hold the shard now, and the shard's own
        worker (the same, or one that is down while ``node`` stands in). None: nobody is up."""
        if not self._hosts:
            return None
        host = max(self._hosts, key=lambda h: (_score(shard, h), -h))
        want = node_id(host, shard % self._hosts[host])
        if want in self._nodes:
            return want, want
        standins = self._standins[host]
        return standins[shard % len(standins)], want
