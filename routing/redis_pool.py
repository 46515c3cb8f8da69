"""Per-process asyncio Redis clients for the inference path, created lazily inside the loop."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from django.conf import settings
from redis.asyncio.cluster import RedisCluster

CLUSTER_SCHEME = "redis+cluster://"
_clients: dict[tuple[str, int], aioredis.Redis | RedisCluster] = {}


def _build(url: str) -> aioredis.Redis | RedisCluster:
    if url.startswith(CLUSTER_SCHEME):
        return RedisCluster.from_url("redis://" + url.removeprefix(CLUSTER_SCHEME))
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=settings.GATEWAY_REDIS_POOL_SIZE, timeout=5
    )
    return aioredis.Redis(connection_pool=pool)


def _client(url: str) -> aioredis.Redis | RedisCluster:
    # A client is bound to the loop it was created in: key the cache by loop as well.
    key = (url, id(asyncio.get_running_loop()))
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = _build(url)
    return client


def main_redis() -> aioredis.Redis:
    """The single-node Redis (REDIS_URL): caches, pub/sub, usage stream."""
    client = _client(settings.REDIS_URL)
    assert isinstance(client, aioredis.Redis)
    return client


def limits_redis() -> aioredis.Redis | RedisCluster:
    """The Redis holding limit counters (GATEWAY_LIMITS_REDIS_URL; may be a cluster)."""
    return _client(settings.GATEWAY_LIMITS_REDIS_URL)


async def close_all() -> None:
    """Close the clients of the running loop (shutdown and tests)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [key for key in _clients if key[1] == loop_id]:
        await _clients.pop(key).aclose()
