"""Per-process cache of what the inference path needs: keys, endpoint routes and custom domains.

Entries are filled on a miss by one `sync_to_async` call (one fill in flight per key), expire after
GATEWAY_KEY_CACHE_TTL (unknown keys after GATEWAY_UNKNOWN_KEY_CACHE_TTL) and are dropped on the
invalidations of gateway_project/kernel/invalidation.py (routing/cache_listener.py follows them).

An entry is served only while it is known to be current: read from the database, or confirmed by a
read of the version key, less than TRUST_SECONDS ago. The listener confirms every half second, so a
request normally costs no Redis round trip; when the listener is stalled a request reads the version
itself (one GET), and when Redis cannot answer it goes back to the database (or answers 503).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connections
from redis.exceptions import RedisError

from gateway_project.kernel.errors import GatewayError
from gateway_project.kernel.hosts import host_normalize
from gateway_project.kernel.invalidation import VERSION_KEY
from groups.models import CustomDomain
from groups.selectors import group_effective_models, group_enforced_limits
from keys.selectors import api_key_resolve
from routing.metrics import metric_inc
from routing.redis_pool import main_redis
from routing.selectors import endpoint_route
from routing.targets import ResolvedEndpoint

logger = logging.getLogger(__name__)
V = TypeVar("V")
MAX_ENTRIES = 100_000
# Unknown keys and slugs are remembered in a separate, smaller table: a flood of unique bad keys
# only ever evicts other misses, never the live keys real traffic depends on.
MAX_MISSES = 10_000
# While the database is down an expired entry is served again for this long before the next try.
STALE_RETRY_SECONDS = 1.0
# An entry is trusted this long after the last database read or version confirmation (the promise
# to users is one second; the rest is the margin for the version read itself).
TRUST_SECONDS = 0.8
VERSION_CHECK_TIMEOUT = 0.15
# After a failed version read, requests go straight to the database this long before trying again.
VERSION_RETRY_SECONDS = 0.5


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
    read_at: float  # when the fill that produced it started reading the database


@dataclass
class _Freshness:
    """What this process knows of the version key (shared by the three caches)."""

    version: int | None = None
    confirmed_at: float = -math.inf  # every change up to `version` applied, as of this moment
    retry_at: float = 0.0
    failing: bool = False
    check: asyncio.Task[bool] | None = None

    def trusts(self, read_at: float, now: float) -> bool:
        return now - max(read_at, self.confirmed_at) < TRUST_SECONDS


_fresh = _Freshness()


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
            if now - _fresh.confirmed_at < TRUST_SECONDS or now - slot.read_at < TRUST_SECONDS:
                return slot.value  # the common case: no Redis round trip
            if await version_confirm():  # drops the caches if a change was missed
                slot = self.slots.get(key)
                if slot is not None and slot.expires > time.monotonic():
                    return slot.value
        elif self.misses.get(key, 0.0) > now:
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
        generation, read_at = self.generation, time.monotonic()
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
            self._keep(key, value, workspace_of, read_at)
        future.set_result(value)
        return value

    def _keep(
        self, key: str, value: V | None, workspace_of: Callable[[V], str], read_at: float
    ) -> None:
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
        self.slots[key] = _Slot(expires, value, workspace_of(value), read_at)

    def _stale(self, key: str, exc: DatabaseError) -> V | None:
        """The database is down: keep serving what this process knew while invalidations still
        reach it, briefly; a key it never saw, or cannot vouch for, gets a 503 to retry."""
        slot = self.slots.get(key)
        logger.warning("configuration database unreachable: %s", exc.__class__.__name__)
        if key in self.misses:
            self.misses[key] = time.monotonic() + STALE_RETRY_SECONDS
            return None
        if slot is None or not _fresh.trusts(-math.inf, time.monotonic()):
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
    """The workspace owning `host` (normalized by kernel/hosts.py) as a custom domain."""
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


def cache_reset() -> None:
    """Forget every entry and the version this process knew, as a newly started worker would."""
    global _fresh
    cache_drop(workspace_id=None)
    _fresh = _Freshness()


def version_observe(version: int, *, sent_at: float) -> None:
    """A read of the version key sent at `sent_at` answered `version`: catch up, then trust."""
    if _fresh.version is not None and version != _fresh.version:
        cache_drop(workspace_id=None)  # a change whose message did not arrive: trust nothing
    _fresh.version = version
    _fresh.confirmed_at = max(_fresh.confirmed_at, sent_at)
    if _fresh.failing:
        _fresh.failing = False
        logger.warning("configuration version readable again; cache trusted")


def version_message(*, version: int, workspace_id: str) -> None:
    """An invalidation message: drop the workspace, or everything if messages were missed."""
    known = _fresh.version
    if known is not None and version <= known:
        return  # already applied by a version read that dropped everything
    if known is None or version == known + 1:
        cache_drop(workspace_id=workspace_id)
    else:
        cache_drop(workspace_id=None)
    if known is not None:
        _fresh.version = version


def version_parse(raw: Any) -> int:
    """The version key's value (missing: 0); ValueError for anything else."""
    return int(raw or 0)


def version_unreadable(exc: BaseException) -> None:
    """A version read failed: requests skip the cache and the next read waits a little."""
    _fresh.retry_at = time.monotonic() + VERSION_RETRY_SECONDS
    if not _fresh.failing:
        _fresh.failing = True
        logger.warning(
            "configuration version unreadable (%s); serving from the database",
            exc.__class__.__name__,
        )


async def version_confirm() -> bool:
    """Read the version key (one GET shared by concurrent callers); False if Redis can't answer."""
    if time.monotonic() < _fresh.retry_at:
        return False
    check = _fresh.check
    if check is None or check.done() or check.get_loop() is not asyncio.get_running_loop():
        check = _fresh.check = asyncio.ensure_future(_version_read())
    return await asyncio.shield(check)


async def _version_read() -> bool:
    sent_at = time.monotonic()
    try:
        async with asyncio.timeout(VERSION_CHECK_TIMEOUT):
            raw = await main_redis().get(VERSION_KEY)
        version = version_parse(raw)
    except (RedisError, OSError, TimeoutError, ValueError) as exc:
        metric_inc("gateway_cache_version_checks_total", (("result", "failed"),))
        version_unreadable(exc)
        return False
    metric_inc("gateway_cache_version_checks_total", (("result", "ok"),))
    version_observe(version, sent_at=sent_at)
    return True


def cache_confirmed_age() -> float:
    """Seconds since the caches were last confirmed current (inf: never)."""
    return time.monotonic() - _fresh.confirmed_at
