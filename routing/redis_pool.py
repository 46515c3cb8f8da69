"""Per-process asyncio Redis clients for the inference path, created lazily inside the loop."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway_project.kernel.redis_mux import RedisMux

CLUSTER_SCHEME = "redis+cluster://"
# Commands of the request path waiting for Redis on one process's connection, at most.
MUX_MAX_WAITING = 4096
# (url, loop id, whether each call is bounded by its caller instead of per-socket-operation)
_clients: dict[tuple[str, int, bool], aioredis.Redis | RedisCluster] = {}


class LeanBlockingPool(aioredis.BlockingConnectionPool):
    """A BlockingConnectionPool whose uncontended lend and return are a list pop and append.

    redis-py's own takes a Condition and a timer, runs its connection checks through its retry
    wrapper and feeds its observability hooks (off here) on every command: about half of the CPU a
    command costs this process. Here an idle connection that is connected with nothing unread
    (the check redis-py makes) is lent at once, and one returned while nobody waits for a
    connection goes straight back. Anything else (a connection to open or repair, an empty pool,
    a waiter, maintenance) takes redis-py's path."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slow_takers = 0
        # The packed commands of the request path (redis_wire.command_run) share one connection.
        self.mux = RedisMux(
            self.make_connection,
            stall=max(settings.GATEWAY_LIMITS_TIMEOUT, settings.GATEWAY_USAGE_RECORD_TIMEOUT),
            max_waiting=MUX_MAX_WAITING,
        )

    async def disconnect(self, inuse_connections: bool = True) -> None:
        """Close the pool's connections and the multiplexed one."""
        await self.mux.close()
        await super().disconnect(inuse_connections)

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        """An idle, ready connection at once; otherwise redis-py's way (which may wait)."""
        idle = self._available_connections
        if idle and not self._in_maintenance:
            connection = idle.pop()
            try:
                ready = connection.is_connected and not await connection.can_read()
            except (RedisConnectionError, OSError):
                ready = False
            if ready:
                self._in_use_connections.add(connection)
                return connection
            idle.append(connection)
        self._slow_takers += 1
        try:
            return await super().get_connection()  # type: ignore[no-untyped-call]
        finally:
            self._slow_takers -= 1

    async def release(self, connection: Any) -> None:
        """Back to the idle list; redis-py's way when someone may wait for it."""
        if self._slow_takers or self._in_maintenance or connection.should_reconnect():
            await super().release(connection)
            return
        self._in_use_connections.remove(connection)
        self._available_connections.append(connection)


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
    pool_class = LeanBlockingPool if caller_bounded else aioredis.BlockingConnectionPool
    pool = pool_class.from_url(
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
        client = _clients.pop(key)
        pool = getattr(client, "connection_pool", None)
        if isinstance(pool, LeanBlockingPool):
            await pool.mux.close()
        await client.aclose()
