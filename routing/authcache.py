"""Per-process cache of what the inference path needs: keys, endpoint routes and custom domains.

Entries are filled on a miss by one `sync_to_async` call (one fill in flight per key), expire after
GATEWAY_KEY_CACHE_TTL (unknown keys after GATEWAY_UNKNOWN_KEY_CACHE_TTL) and are dropped on the
invalidations of gateway_project/kernel/invalidation.py (routing/cache_listener.py follows them).
An entry is served only while the version key vouches for it (routing/ttl_cache.py); this module
follows that version: a change whose message was missed drops everything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import connections
from redis.exceptions import RedisError

from gateway_project.kernel.hosts import host_normalize
from gateway_project.kernel.invalidation import VERSION_KEY
from groups.models import CustomDomain
from groups.selectors import group_effective_models, group_enforced_limits
from keys.selectors import api_key_resolve
from routing.metrics import cache_version_checks
from routing.redis_pool import main_redis
from routing.selectors import endpoint_route
from routing.targets import ResolvedEndpoint
from routing.ttl_cache import TtlCache, fresh

logger = logging.getLogger(__name__)
V = TypeVar("V")
VERSION_CHECK_TIMEOUT = 0.15
# After a failed version read, requests go straight to the database this long before trying again.
VERSION_RETRY_SECONDS = 0.5


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
    # Unix seconds; checked against the clock on every request, so expiry needs no write.
    expires_at: float | None = None


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
        expires_at=None if key.expires_at is None else key.expires_at.timestamp(),
    )


def _domains_load() -> dict[str, str]:
    rows = CustomDomain.objects.values_list("host", "workspace_id")
    return {host_normalize(host): workspace_id for host, workspace_id in rows}


def version_observe(version: int, *, sent_at: float) -> None:
    """A read of the version key sent at `sent_at` answered `version`: catch up, then trust."""
    if fresh.version is not None and version != fresh.version:
        cache_drop(workspace_id=None)  # a change whose message did not arrive: trust nothing
    fresh.version = version
    fresh.confirmed_at = max(fresh.confirmed_at, sent_at)
    if fresh.failing:
        fresh.failing = False
        logger.warning("configuration version readable again; cache trusted")


def version_message(*, version: int, workspace_id: str) -> None:
    """An invalidation message: drop the workspace, or everything if messages were missed."""
    known = fresh.version
    if known is not None and version <= known:
        return  # already applied by a version read that dropped everything
    if known is None or version == known + 1:
        cache_drop(workspace_id=workspace_id)
    else:
        cache_drop(workspace_id=None)
    if known is not None:
        fresh.version = version


def version_parse(raw: Any) -> int:
    """The version key's value (missing: 0); ValueError for anything else."""
    return int(raw or 0)


def version_unreadable(exc: BaseException) -> None:
    """A version read failed: requests skip the cache and the next read waits a little."""
    fresh.retry_at = time.monotonic() + VERSION_RETRY_SECONDS
    if not fresh.failing:
        fresh.failing = True
        logger.warning(
            "configuration version unreadable (%s); serving from the database",
            exc.__class__.__name__,
        )


async def version_confirm() -> bool:
    """Read the version key (one GET shared by concurrent callers); False if Redis can't answer."""
    if time.monotonic() < fresh.retry_at:
        return False
    check = fresh.check
    if check is None or check.done() or check.get_loop() is not asyncio.get_running_loop():
        check = fresh.check = asyncio.ensure_future(_version_read())
    return await asyncio.shield(check)


async def _version_read() -> bool:
    sent_at = time.monotonic()
    try:
        async with asyncio.timeout(VERSION_CHECK_TIMEOUT):
            raw = await main_redis().get(VERSION_KEY)
        version = version_parse(raw)
    except (RedisError, OSError, TimeoutError, ValueError) as exc:
        cache_version_checks.labels("failed").inc()
        version_unreadable(exc)
        return False
    cache_version_checks.labels("ok").inc()
    version_observe(version, sent_at=sent_at)
    return True


def cache_confirmed_age() -> float:
    """Seconds since the caches were last confirmed current (inf: never)."""
    return time.monotonic() - fresh.confirmed_at


_keys: TtlCache[KeyEntry] = TtlCache(confirm=version_confirm)
_routes: TtlCache[ResolvedEndpoint] = TtlCache(confirm=version_confirm)
_domains: TtlCache[dict[str, str]] = TtlCache(confirm=version_confirm)


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
    cache_drop(workspace_id=None)
    fresh.forget()
