"""Per-process cache of what the inference path needs: keys, endpoint routes and custom domains.

Entries are filled on a miss by one `sync_to_async` call (one fill in flight per key), expire after
GATEWAY_KEY_CACHE_TTL (unknown keys after GATEWAY_UNKNOWN_KEY_CACHE_TTL) and are dropped
by `cache_listen`, which follows the `gw:cfg` channel and polls `gw:cfg:version`
(groups/invalidation.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connections
from redis.exceptions import RedisError

from gateway_project.errors import GatewayError
from gateway_project.hosts import host_normalize
from groups.invalidation import CHANNEL, VERSION_KEY
from groups.models import CustomDomain
from groups.selectors import group_effective_models, group_enforced_limits
from keys.selectors import api_key_resolve
from routing.redis_pool import main_redis
from routing.selectors import endpoint_route
from routing.targets import ResolvedEndpoint
from routing.ticks import pause

logger = logging.getLogger(__name__)
V = TypeVar("V")
MAX_ENTRIES = 100_000
# Unknown keys and slugs are remembered in a separate, smaller table: a flood of unique bad keys
# only ever evicts other misses, never the live keys real traffic depends on.
MAX_MISSES = 10_000
# While the database is down an expired entry is served again for this long before the next try.
STALE_RETRY_SECONDS = 1.0


class ConfigurationUnavailable(GatewayError):
    """The database is unreachable and the key (or slug, or host) is not in this process's cache."""

    status = 503
    type = "service_unavailable_error"
    code = "service_unavailable"


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """What a federated key may do, resolved once per process."""

    workspace_id: str
    onboarded: bool
    group_id: str
    root_group_id: str
    external_id: str
    key_prefix: str
    allowed_slugs: frozenset[str]
    limits: Mapping[str, list[Any]]  # slug -> [EnforcedLimit]


@dataclass(slots=True)
class _Slot(Generic[V]):
    expires: float
    value: V | None
    workspace_id: str | None


@dataclass
class TtlCache(Generic[V]):
    """A dict of expiring values with single-flight fills and workspace-scoped eviction."""

    slots: dict[str, _Slot[V]] = field(default_factory=dict)
    misses: dict[str, float] = field(default_factory=dict)  # key -> expiry (monotonic)
    inflight: dict[str, asyncio.Future[V | None]] = field(default_factory=dict)
    generation: int = 0

    async def get(
        self, key: str, fill: Callable[[], Awaitable[V | None]], workspace_of: Callable[[V], str]
    ) -> V | None:
        """The cached value, or the result of one shared `fill()` for this key."""
        slot = self.slots.get(key)
        now = time.monotonic()
        if slot is not None and slot.expires > now:
            return slot.value
        if self.misses.get(key, 0.0) > now:
            return None
        pending = self.inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        return await self._fill(key, fill, workspace_of)

    async def _fill(
        self, key: str, fill: Callable[[], Awaitable[V | None]], workspace_of: Callable[[V], str]
    ) -> V | None:
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self.inflight[key] = future
        generation = self.generation
        try:
            try:
                value = await fill()
            except DatabaseError as exc:
                value = self._stale(key, exc)
                future.set_result(value)
                return value
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must log it
            raise
        finally:
            self.inflight.pop(key, None)
        # An invalidation that arrived during the fill makes its result stale: serve, do not keep.
        if generation == self.generation:
            self._keep(key, value, workspace_of)
        future.set_result(value)
        return value

    def _keep(self, key: str, value: V | None, workspace_of: Callable[[V], str]) -> None:
        expires = time.monotonic() + _ttl(found=value is not None)
        if value is None:
            self.slots.pop(key, None)
            self.misses.pop(key, None)  # re-inserted last: the table stays in expiry order
            if len(self.misses) >= MAX_MISSES:
                del self.misses[next(iter(self.misses))]
            self.misses[key] = expires
            return
        self.misses.pop(key, None)
        if len(self.slots) >= MAX_ENTRIES:
            self._sweep()
        self.slots[key] = _Slot(expires, value, workspace_of(value))

    def _stale(self, key: str, exc: DatabaseError) -> V | None:
        """The database is down: keep serving what this process knew (invalidations still drop
        entries), briefly; a key it never saw gets a 503 the client may retry."""
        slot = self.slots.get(key)
        logger.warning("configuration database unreachable: %s", exc.__class__.__name__)
        if key in self.misses:
            self.misses[key] = time.monotonic() + STALE_RETRY_SECONDS
            return None
        if slot is None:
            raise ConfigurationUnavailable(
                "The gateway cannot reach its configuration store; retry shortly.",
                headers={"Retry-After": "1"},
            ) from exc
        slot.expires = time.monotonic() + STALE_RETRY_SECONDS
        return slot.value

    def _sweep(self) -> None:
        # Many live keys must not grow the cache without bound: drop the expired, then halve.
        now = time.monotonic()
        for key in [k for k, slot in self.slots.items() if slot.expires <= now]:
            del self.slots[key]
        if len(self.slots) >= MAX_ENTRIES:
            for key in list(self.slots)[: len(self.slots) // 2]:
                del self.slots[key]

    def drop_workspace(self, workspace_id: str) -> None:
        """Forget the workspace's entries and every negative entry."""
        self.generation += 1
        self.misses.clear()
        for key in [k for k, s in self.slots.items() if s.workspace_id == workspace_id]:
            del self.slots[key]

    def clear(self) -> None:
        """Forget everything."""
        self.generation += 1
        self.slots.clear()
        self.misses.clear()


def _ttl(*, found: bool) -> float:
    return settings.GATEWAY_KEY_CACHE_TTL if found else settings.GATEWAY_UNKNOWN_KEY_CACHE_TTL


def _with_connection_closed(func: Callable[..., V]) -> Callable[..., V]:
    """Run `func` and release this thread's DB connections (pool threads must not keep them)."""

    def run(*args: Any, **kwargs: Any) -> V:
        try:
            return func(*args, **kwargs)
        finally:
            connections.close_all()

    return run


def _key_load(plaintext: str) -> KeyEntry | None:
    key = api_key_resolve(plaintext=plaintext)
    if key is None:
        return None
    group, workspace = key.group, key.workspace
    slugs = {model["slug"] for model in group_effective_models(group=group)}
    if key.slugs is not None:
        slugs &= set(key.slugs)
    limits = group_enforced_limits(group=group)
    return KeyEntry(
        workspace_id=workspace.id,
        onboarded=workspace.onboarded,
        group_id=group.id,
        root_group_id=group.root_id or group.id,
        external_id=group.external_entity_id,
        key_prefix=key.prefix,
        allowed_slugs=frozenset(slugs),
        limits={slug: list(items) for slug, items in limits.items() if items and slug in slugs},
    )


def _domains_load() -> dict[str, str]:
    rows = CustomDomain.objects.values_list("host", "workspace_id")
    return {host_normalize(host): workspace_id for host, workspace_id in rows}


_keys: TtlCache[KeyEntry] = TtlCache()
_routes: TtlCache[ResolvedEndpoint] = TtlCache()
_domains: TtlCache[dict[str, str]] = TtlCache()


# Built once: constructing a sync_to_async wrapper costs tens of microseconds.
_key_load_async = sync_to_async(_with_connection_closed(_key_load), thread_sensitive=False)
_route_load_async = sync_to_async(_with_connection_closed(endpoint_route), thread_sensitive=False)
_domains_load_async = sync_to_async(_with_connection_closed(_domains_load), thread_sensitive=False)


async def key_lookup(*, plaintext: str, key_hash: str) -> KeyEntry | None:
    """The live key's entry, or None for an unknown/revoked key."""
    return await _keys.get(key_hash, lambda: _key_load_async(plaintext), _key_workspace)


async def route_lookup(*, slug: str) -> ResolvedEndpoint | None:
    """The slug's ResolvedEndpoint, or None when no live endpoint has it."""
    return await _routes.get(slug, lambda: _route_load_async(slug=slug), _route_workspace)


async def domain_workspace(*, host: str) -> str | None:
    """The workspace owning `host` (normalized by gateway_project.hosts) as a custom domain."""
    table = await _domains.get("*", _domains_load_async, lambda _: "*")
    return (table or {}).get(host)


def _key_workspace(entry: KeyEntry) -> str:
    return entry.workspace_id


def _route_workspace(route: ResolvedEndpoint) -> str:
    return str(route.workspace_id)


def cache_generation() -> int:
    """Grows with every eviction (tests tell a steady state from a refill after invalidation)."""
    return _keys.generation + _routes.generation + _domains.generation


def cache_drop(*, workspace_id: str | None) -> None:
    """Evict one workspace's entries (None: everything)."""
    for cache in (_keys, _routes):
        if workspace_id is None:
            cache.clear()
        else:
            cache.drop_workspace(workspace_id)
    _domains.clear()


async def cache_listen(*, stop: asyncio.Event) -> None:
    """Follow invalidations until `stop` is set; reconnects with backoff on Redis errors."""
    reconnect = False
    while not stop.is_set():
        try:
            await _listen_once(stop, reconnect=reconnect)
        except (RedisError, OSError):
            reconnect = True
            logger.warning("cache invalidation listener lost Redis; retrying")
            cache_drop(workspace_id=None)
            await pause(stop, 1.0)


async def _listen_once(stop: asyncio.Event, *, reconnect: bool) -> None:
    client = main_redis()
    pubsub = client.pubsub()
    await pubsub.subscribe(CHANNEL)
    try:
        version = await client.get(VERSION_KEY)
        if reconnect:  # whatever was cached while disconnected may be stale
            cache_drop(workspace_id=None)
        poll = settings.GATEWAY_CACHE_VERSION_POLL
        next_poll, seen = time.monotonic() + poll, 0
        while not stop.is_set():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=poll)
            if message is not None and message["type"] == "message":
                cache_drop(workspace_id=_decode(message["data"]))
                seen += 1
            if time.monotonic() >= next_poll:
                version, seen = await _version_check(client, version, seen)
                next_poll = time.monotonic() + poll
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated


async def _version_check(client: Any, version: Any, seen: int) -> tuple[Any, int]:
    current = await client.get(VERSION_KEY)
    if current != version:
        delta = int(current or 0) - int(version or 0)
        if delta != seen:  # a message was lost (or the counter reset): trust nothing
            cache_drop(workspace_id=None)
    return current, 0


def _decode(data: Any) -> str:
    return data.decode() if isinstance(data, bytes) else str(data)
