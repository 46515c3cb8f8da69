"""Follows configuration invalidations (kernel/invalidation.py) for this worker's caches.

The listener has its own Redis client, with socket timeouts, so that neither a full pool nor a slow
request can delay it. Every GATEWAY_CACHE_VERSION_POLL seconds it reads the version key (which
keeps the caches trusted, routing/authcache.py) and pings its subscription; a subscription that
stays silent, like a version read that times out, means the connection is half-open, and it is
replaced. routing/lifecycle.py restarts the listener should it ever die.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import RedisError

from gateway_project.kernel.invalidation import VERSION_KEY, channel, message_decode
from routing import authcache
from routing.periodic import pause

CLIENT_NAME = "gateway-cache-listener"
SOCKET_TIMEOUT = 1.0
# No reply on the subscription (not even to our pings) for this long: the connection is half-open.
SILENCE_SECONDS = 1.5
RECONNECT_BACKOFF = (0.1, 0.2, 0.5, 1.0, 2.0)
# A session that lasted this long was healthy: the next failure starts the backoff again.
HEALTHY_SESSION_SECONDS = 10.0
logger = logging.getLogger(__name__)


async def cache_listen(*, stop: asyncio.Event) -> None:
    """Follow invalidations until `stop` is set; reconnects with backoff on Redis errors."""
    failures, reconnect = 0, False
    while not stop.is_set():
        started = time.monotonic()
        try:
            await _session(stop, reconnect=reconnect)
        except (RedisError, OSError, TimeoutError) as exc:
            if time.monotonic() - started > HEALTHY_SESSION_SECONDS:
                failures = 0
            logger.warning(
                "cache invalidation listener lost Redis (%s); reconnecting",
                exc.__class__.__name__,
            )
            await pause(stop, RECONNECT_BACKOFF[min(failures, len(RECONNECT_BACKOFF) - 1)])
            failures, reconnect = failures + 1, True


def _client() -> aioredis.Redis:
    return aioredis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        client_name=CLIENT_NAME,
    )


async def _session(stop: asyncio.Event, *, reconnect: bool) -> None:
    client = _client()
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(channel())
        if reconnect:  # a Redis that lost its data may count the version up to the same number
            authcache.cache_drop(workspace_id=None)
        await _version_read(client)
        await _follow(stop, client, pubsub)
    finally:
        try:
            async with asyncio.timeout(SOCKET_TIMEOUT):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py
                await client.aclose()
        except (RedisError, OSError, TimeoutError):
            pass  # the connection is being abandoned anyway


async def _follow(stop: asyncio.Event, client: aioredis.Redis, pubsub: Any) -> None:
    poll = settings.GATEWAY_CACHE_VERSION_POLL
    heard = time.monotonic()
    next_poll = heard + poll
    while not stop.is_set():
        wait = max(0.0, next_poll - time.monotonic())  # keep the cadence whatever arrives
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
        if message is not None:
            heard = time.monotonic()
            if message["type"] == "message":
                _apply(message["data"])
        if time.monotonic() >= next_poll:
            if time.monotonic() - heard > max(SILENCE_SECONDS, 3 * poll):
                raise TimeoutError("the invalidation subscription went silent")
            await pubsub.ping()
            await _version_read(client)
            next_poll = time.monotonic() + poll


def _apply(data: Any) -> None:
    decoded = message_decode(data)
    if decoded is None:  # not ours to understand: assume the worst
        authcache.cache_drop(workspace_id=None)
        return
    version, workspace_id = decoded
    authcache.version_message(version=version, workspace_id=workspace_id)


async def _version_read(client: aioredis.Redis) -> None:
    sent_at = time.monotonic()
    raw = await client.get(VERSION_KEY)
    try:
        version = authcache.version_parse(raw)
    except ValueError as exc:
        authcache.version_unreadable(exc)
        return
    authcache.version_observe(version, sent_at=sent_at)
