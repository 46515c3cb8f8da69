"""The limit counters in Redis: their keys, the one Lua script that checks and charges them, and
how that script is run (async on the request path, sync from Celery and the usage API).

SECOND/MINUTE limits use GCRA (one theoretical-arrival-time number per counter): the burst capacity
is the threshold, it refills continuously at threshold/period, so there is no 2x burst at a window
edge, weighted costs and refunds are one addition, and the retry delay is exact. Over any span of
d seconds a counter admits at most threshold + d * threshold / period units. DAY and MONTH limits
are counters on UTC calendar-day keys (`...:DAY:YYYYMMDD`) and calendar-month keys
(`...:MONTH:YYYYMM`) that expire a day after their period ends.

Keys: `rl:{<root_group_id>}:<counter_group_id>:<slug>:<TYPE>:<UNIT>`; the root id is the Redis
Cluster hash tag, so a whole group tree lives in one slot and one script sees the whole chain.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import redis
import redis.exceptions as rx
from django.conf import settings
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.cluster import RedisCluster as SyncRedisCluster

from gateway_project.kernel.deadline import deadline
from gateway_project.kernel.errors import GatewayError
from gateway_project.kernel.hot_settings import hot
from gateway_project.kernel.redis_wire import command_bulk, command_pack, command_run
from routing.redis_pool import CLUSTER_SCHEME, limits_redis

if TYPE_CHECKING:
    from groups.selectors import EnforcedLimit

SCRIPT = Path(__file__).with_name("limits_script.lua").read_text()
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
_EVALSHA_HEAD = (command_bulk("EVALSHA"), command_bulk(SCRIPT_SHA))
# The script's EPOCH: GCRA keys hold theoretical arrival times in microseconds since it.
GCRA_EPOCH_US = 1_767_225_600_000_000
PERIOD_US = {"SECOND": 1_000_000, "MINUTE": 60_000_000, "DAY": 0, "MONTH": -1}
CALENDAR_UNITS = frozenset({"DAY", "MONTH"})
# Lua numbers are doubles: a cost or delta handed to the script stays an exact integer. A cost
# this large never fits any threshold the API accepts for SPEND (at most 2**53 - 1).
LUA_INT_MAX = 2**53
# What "Redis is unreachable" looks like from redis-py, single node and cluster, plus our timeout.
UNAVAILABLE = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.ClusterError,
    rx.RedisClusterException,
    TimeoutError,
    OSError,
)


class LimitsUnavailable(GatewayError):
    """The limit counters cannot be reached (503; the proxy fails closed unless told otherwise)."""

    status = 503
    type = "service_unavailable_error"
    code = "limits_unavailable"


@dataclass(frozen=True, slots=True)
class ChargedCounter:
    """One counter a request is (or would be) charged to."""

    key: str
    type: str
    unit: str
    threshold: int
    cost: int


def counter_key(*, limit: EnforcedLimit, slug: str) -> str:
    """The Redis key of one limit's counter (DAY keys get `:YYYYMMDD`, MONTH `:YYYYMM`)."""
    return f"rl:{{{limit.root_group_id}}}:{limit.counter_group_id}:{slug}:{limit.type}:{limit.unit}"


def counter_group(key: str) -> str:
    """The group a counter key charges (`rl:{root}:<group>:...`)."""
    return key.split(":", 3)[2]


async def script_run(
    *,
    mode: str,
    counters: Sequence[ChargedCounter],
    amounts: Sequence[int] | None,
    now: float | None,
) -> Any:
    """Run the script over `counters` (amounts None: each counter's cost; now None: Redis TIME)."""
    keys = [counter.key for counter in counters]
    args: list[Any] = [mode, "" if now is None else str(round(now * 1_000_000))]
    args += script_limit_args(counters=counters, amounts=amounts)
    return await script_call(keys=keys, args=args)


async def script_call(*, keys: list[str], args: list[Any]) -> Any:
    """Run the script with these KEYS and ARGV, bounded by GATEWAY_LIMITS_TIMEOUT."""
    client = limits_redis()
    if not isinstance(client, RedisCluster):
        async with deadline(hot.GATEWAY_LIMITS_TIMEOUT):
            return await _evalsha(client, keys=keys, args=args)
    # redis-py's async cluster client raises MaxConnectionsError past 100 connections per node,
    # and races (AttributeError on a half-open connection) when a burst arrives before its
    # slot map is loaded: queue cluster calls at a gate and initialize before each call.
    async with _cluster_gate(client):
        async with deadline(hot.GATEWAY_LIMITS_TIMEOUT):
            await client.initialize()
            return await _evalsha(client, keys=keys, args=args)


def script_adjust_call(
    *, counters: Sequence[ChargedCounter], amounts: Sequence[int]
) -> tuple[list[str], list[Any]]:
    """The keys and ARGV of an "adjust" run of the script at the server's clock."""
    keys = [counter.key for counter in counters]
    return keys, ["adjust", "", *script_limit_args(counters=counters, amounts=amounts)]


def script_limit_args(
    *, counters: Sequence[ChargedCounter], amounts: Sequence[int] | None
) -> list[Any]:
    """The script's per-limit ARGV: period code, threshold, cost or delta (clamped for Lua)."""
    args: list[Any] = []
    for index, counter in enumerate(counters):
        amount = counter.cost if amounts is None else amounts[index]
        amount = max(-LUA_INT_MAX, min(LUA_INT_MAX, int(amount)))
        args += [PERIOD_US[counter.unit], counter.threshold, amount]
    return args


async def _evalsha(client: Redis | RedisCluster, *, keys: list[str], args: list[Any]) -> Any:
    try:
        if isinstance(client, RedisCluster):
            return await _evalsha_cluster(client, keys=keys, args=args)
        command = command_pack(len(keys), *keys, *args, packed=_EVALSHA_HEAD)
        try:
            return await command_run(client, command)
        except rx.NoScriptError:
            # First use on this server, or after a restart / SCRIPT FLUSH / failover.
            await client.script_load(SCRIPT)
            return await command_run(client, command)
    except RuntimeError as exc:
        if not transport_closed(exc):
            raise
        raise rx.ConnectionError(f"Redis connection closed under the client: {exc}") from exc


async def _evalsha_cluster(client: RedisCluster, *, keys: list[str], args: list[Any]) -> Any:
    try:
        return await client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
    except rx.NoScriptError:
        await client.script_load(SCRIPT)
        return await client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)


def transport_closed(exc: RuntimeError) -> bool:
    """Whether a RuntimeError from the Redis client is a connection whose socket uvloop already
    closed (redis-py reconnecting while Redis restarts): Redis being unreachable, not a bug."""
    text = str(exc)
    return "handler is closed" in text or "closed=True" in text


_cluster_gates: WeakKeyDictionary[RedisCluster, asyncio.Semaphore] = WeakKeyDictionary()


def _cluster_gate(client: RedisCluster) -> asyncio.Semaphore:
    gate = _cluster_gates.get(client)
    if gate is None:
        gate = _cluster_gates[client] = asyncio.Semaphore(settings.GATEWAY_REDIS_POOL_SIZE)
    return gate


_sync_clients: dict[str, redis.Redis | SyncRedisCluster] = {}


def sync_client() -> redis.Redis | SyncRedisCluster:
    """This process's synchronous client of the limits Redis (Celery tasks, the usage API)."""
    url = settings.GATEWAY_LIMITS_REDIS_URL
    client = _sync_clients.get(url)
    if client is None:
        timeout = hot.GATEWAY_LIMITS_TIMEOUT
        if url.startswith(CLUSTER_SCHEME):
            client = SyncRedisCluster.from_url(
                "redis://" + url.removeprefix(CLUSTER_SCHEME), socket_timeout=timeout
            )
        else:
            client = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        _sync_clients[url] = client
    return client
