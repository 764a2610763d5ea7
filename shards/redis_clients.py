"""Redis clients made from the config: one Redis or a Redis Cluster, chosen in one place.

The bus gets a link maker (the lean RESP client, sharded on a cluster); everything else
(leases, admin notices, health checks) gets a redis-py asyncio client, ``Redis`` or
``RedisCluster``; both speak the same commands, keys are routed by the cluster client.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from core.config import Settings
from shards.links import ClusterSeeds, Connect, SingleLink
from shards.resp import Message

AnyRedis = aioredis.Redis | RedisCluster


def redis_client(settings: Settings, **options: Any) -> AnyRedis:
    """A redis-py asyncio client for ``settings``: ``RedisCluster`` with redis_cluster (it
    follows MOVED and failovers by itself), else ``Redis``. ``options`` go to either, e.g.
    ``socket_timeout=2``."""
    url = settings.effective_redis_url
    if not settings.redis_cluster:
        return aioredis.Redis.from_url(url, **options)
    nodes = [urlsplit(u) for u in [url, *settings.redis_cluster_seeds]]
    seeds = [ClusterNode(n.hostname or "127.0.0.1", n.port or 6379) for n in nodes]
    return RedisCluster.from_url(url, startup_nodes=seeds, **options)


def bus_connect(settings: Settings) -> Connect:
    """How the bus makes its link to Redis, each time it (re)connects."""
    if settings.redis_cluster:
        seeds = ClusterSeeds([settings.effective_redis_url, *settings.redis_cluster_seeds])
        return seeds.connect
    url = settings.effective_redis_url

    async def single(on_message: Message) -> SingleLink:
        return await SingleLink.connect(url, on_message)

    return single
