"""An expiring, single-flight cache that serves an entry only while it is known to be current.

Known to be current: read from the database, or confirmed by a read of the version key, less than
TRUST_SECONDS ago. The listener confirms every half second, so a request normally costs no Redis
round trip; when the listener is stalled a request reads the version itself (one GET), and when
Redis cannot answer it goes back to the database (or answers 503). routing/authcache.py holds the
inference path's caches and follows the version.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from django.db import DatabaseError

from gateway_project.kernel.errors import GatewayError
from gateway_project.kernel.hot_settings import hot

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


class ConfigurationUnavailable(GatewayError):
    """The database is unreachable and the key (or slug, or host) is not in this process's cache."""

    status = 503
    type = "service_unavailable_error"
    code = "service_unavailable"


@dataclass(slots=True)
class _Slot(Generic[V]):
    expires: float
    value: V | None
    workspace_id: str | None
    read_at: float  # when the fill that produced it started reading the database


@dataclass
class Freshness:
    """What this process knows of the version key (shared by every cache of the process)."""

    version: int | None = None
    confirmed_at: float = -math.inf  # every change up to `version` applied, as of this moment
    retry_at: float = 0.0
    failing: bool = False
    check: asyncio.Task[bool] | None = None

    def trusts(self, read_at: float, now: float) -> bool:
        """Whether an entry read from the database at `read_at` may be served at `now`."""
        return now - max(read_at, self.confirmed_at) < TRUST_SECONDS

    def forget(self) -> None:
        """Know nothing of the version, as a newly started worker."""
        self.version, self.confirmed_at, self.retry_at = None, -math.inf, 0.0
        self.failing, self.check = False, None


# One per process, never replaced (forget() resets it in place): every cache reads this one.
fresh = Freshness()


@dataclass
class TtlCache(Generic[V]):
    """A dict of expiring values with single-flight fills and workspace-scoped eviction.

    `confirm` reads the configuration version (dropping the caches if a change was missed) and
    says whether it could; it is called only when an entry is no longer trusted.
    """

    confirm: Callable[[], Awaitable[bool]]
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
            if now - fresh.confirmed_at < TRUST_SECONDS or now - slot.read_at < TRUST_SECONDS:
                return slot.value  # the common case: no Redis round trip
            if await self.confirm():  # drops the caches if a change was missed
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
        if slot is None or not fresh.trusts(-math.inf, time.monotonic()):
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
    return hot.GATEWAY_KEY_CACHE_TTL if found else hot.GATEWAY_UNKNOWN_KEY_CACHE_TTL
