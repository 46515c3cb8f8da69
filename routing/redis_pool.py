"""Per-process asyncio Redis clients for the inference path, created lazily inside the loop."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from django.conf import settings
from redis.asyncio.cluster import RedisCluster

CLUSTER_SCHEME = "redis+cluster://"
# (url, loop id, whether each call is bounded by its caller instead of per-socket-operation)
_clients: dict[tuple[str, int, bool], aioredis.Redis | RedisCluster] = {}


def _build(url: str, *, caller_bounded: bool) -> aioredis.Redis | RedisCluster:
    if url.startswith(CLUSTER_SCHEME):
        return RedisCluster.from_url("redis://" + url.removeprefix(CLUSTER_SCHEME))
    timeouts: dict[str, float | None] = {}
    if caller_bounded:
        # redis-py bounds each write with asyncio.wait_for (a Task per command) and each read
        # with its own timer; a caller that bounds the whole round trip needs neither.
        timeouts = {
            "socket_timeout": None,
            "socket_connect_timeout": settings.GATEWAY_LIMITS_TIMEOUT,
        }
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=settings.GATEWAY_REDIS_POOL_SIZE, timeout=5, **timeouts
    )
    return aioredis.Redis(connection_pool=pool)


def _client(url: str, *, caller_bounded: bool = False) -> aioredis.Redis | RedisCluster:
    # A client is bound to the loop it was created in: key the cache by loop as well.
    key = (url, id(asyncio.get_running_loop()), caller_bounded)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = _build(url, caller_bounded=caller_bounded)
    return client


def main_redis() -> aioredis.Redis:
    """The single-node Redis (REDIS_URL): caches, pub/sub, usage stream."""
    client = _client(settings.REDIS_URL)
    assert isinstance(client, aioredis.Redis)
    return client


def limits_redis() -> aioredis.Redis | RedisCluster:
    """The Redis holding limit counters (GATEWAY_LIMITS_REDIS_URL; may be a cluster).

    A single node's client has no per-socket-operation timeout: every call of the gateway goes
    through `limit_counters.script_run`, which bounds the round trip by GATEWAY_LIMITS_TIMEOUT."""
    return _client(settings.GATEWAY_LIMITS_REDIS_URL, caller_bounded=True)


def record_redis() -> aioredis.Redis:
    """The main Redis as the record step reaches it: no per-socket-operation timeout, since
    `usage_record_write` bounds its whole step by GATEWAY_USAGE_RECORD_TIMEOUT. With the limit
    counters on the main Redis this is the limits' client (one pool for both)."""
    client = _client(settings.REDIS_URL, caller_bounded=True)
    assert isinstance(client, aioredis.Redis)
    return client


def limits_on_main() -> bool:
    """Whether the limit counters live on the main Redis (one round trip can reach both)."""
    return bool(settings.GATEWAY_LIMITS_REDIS_URL == settings.REDIS_URL)


async def close_all() -> None:
    """Close the clients of the running loop (shutdown and tests)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [key for key in _clients if key[1] == loop_id]:
        await _clients.pop(key).aclose()
