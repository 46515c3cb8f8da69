"""What support asks about a customer's traffic, recorded off the request path: limit rejections
and when each federated key was last used.

A 429 or an authenticated request only touches this worker's memory; `activity_flush_loop` writes
what accumulated in one Redis pipeline every FLUSH_EVERY seconds. Everything is bounded: the
worker's buffer (MAX_PENDING counters, MAX_PENDING_RECENT rejections, KEYS_REMEMBERED keys), and
Redis, where every key expires and lists and sets are trimmed:

- `gw:rej:<group>:min:<YYYYMMDD>` (hash): `HHMM|slug|TYPE|UNIT|threshold|limit group` -> count,
  kept KEEP_SECONDS.
- `gw:rej:<group>:last` (list of JSON): the group's last RECENT_PER_GROUP rejections with their
  reason and key prefix.
- `gw:rej:groups` (sorted set): the RECENT_GROUPS groups rejected last, by time.
- `gw:key-last-used` (hash): key prefix -> unix time, noted at most once a minute per key and
  worker; `keys_last_used_sync` (Celery beat) moves it into `ApiKey.last_used_at`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from routing.periodic import every

logger = logging.getLogger(__name__)

FLUSH_EVERY = 1.0
KEEP_SECONDS = 8 * 86400
RECENT_PER_GROUP = 50
RECENT_GROUPS = 1000
MAX_PENDING = 10_000
MAX_PENDING_RECENT = 500
KEY_USE_RESOLUTION = 60.0
KEYS_REMEMBERED = 100_000
GROUPS_KEY = "gw:rej:groups"
LAST_USED_KEY = "gw:key-last-used"


def minutes_key(group_id: str, day: str) -> str:
    """The hash of one group's rejections per minute on one UTC day (YYYYMMDD)."""
    return f"gw:rej:{group_id}:min:{day}"


def recent_key(group_id: str) -> str:
    """The list of one group's last rejections, newest first."""
    return f"gw:rej:{group_id}:last"


@dataclass(frozen=True, slots=True)
class Rejection:
    """One 429: whose, on which slug, by which limit, why."""

    group_id: str
    key_prefix: str
    slug: str
    limit_type: str
    limit_unit: str
    threshold: int
    limit_group: str
    reason: str


@dataclass
class ActivityBook:
    """One worker's unwritten activity."""

    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    recent: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=MAX_PENDING_RECENT))
    groups: dict[str, float] = field(default_factory=dict)
    dropped: int = 0
    used: dict[str, float] = field(default_factory=dict)
    noted: dict[str, float] = field(default_factory=dict)

    def rejection(self, rejection: Rejection, *, now: float) -> None:
        """Count one rejection (no I/O)."""
        moment = datetime.fromtimestamp(now, UTC)
        limit = "|".join(
            (
                rejection.slug,
                rejection.limit_type.upper(),
                rejection.limit_unit.upper(),
                str(rejection.threshold),
                rejection.limit_group,
            )
        )
        slot = (rejection.group_id, f"{moment:%Y%m%d}", f"{moment:%H%M}|{limit}")
        if slot in self.counts or len(self.counts) < MAX_PENDING:
            self.counts[slot] = self.counts.get(slot, 0) + 1
        else:
            self.dropped += 1
        entry = {
            "at": round(now, 3),
            "slug": rejection.slug,
            "type": rejection.limit_type.upper(),
            "unit": rejection.limit_unit.upper(),
            "threshold": rejection.threshold,
            "limit_group": rejection.limit_group,
            "key_prefix": rejection.key_prefix,
            "reason": rejection.reason[:300],
        }
        self.recent.append((rejection.group_id, json.dumps(entry, separators=(",", ":"))))
        self.groups[rejection.group_id] = now

    def key_used(self, prefix: str, *, now: float) -> None:
        """Note a key's use, at most once per KEY_USE_RESOLUTION seconds (no I/O)."""
        if now - self.noted.get(prefix, 0.0) < KEY_USE_RESOLUTION:
            return
        if len(self.noted) >= KEYS_REMEMBERED:
            self.noted.clear()  # at worst one more write per key
        self.noted[prefix] = now
        self.used[prefix] = now

    def take(self) -> ActivityBook:
        """What is pending, handed to a flush; this book starts empty again (but for `noted`)."""
        taken = ActivityBook(
            counts=self.counts,
            recent=self.recent,
            groups=self.groups,
            dropped=self.dropped,
            used=self.used,
        )
        self.counts, self.groups, self.used, self.dropped = {}, {}, {}, 0
        self.recent = deque(maxlen=MAX_PENDING_RECENT)
        return taken

    def empty(self) -> bool:
        """Nothing to write."""
        return not (self.counts or self.recent or self.used or self.dropped)


_books: dict[int, ActivityBook] = {}


def activity() -> ActivityBook:
    """The running loop's book (one per worker)."""
    loop_id = id(asyncio.get_running_loop())
    found = _books.get(loop_id)
    if found is None:
        found = _books[loop_id] = ActivityBook()
    return found


async def activity_flush(client: Any, book: ActivityBook) -> None:
    """Write what `book` holds in one pipeline (lost, with a warning, if Redis cannot take it)."""
    if book.empty():
        return
    taken = book.take()
    pipe = client.pipeline(transaction=False)
    for (group_id, day, slot), count in taken.counts.items():
        pipe.hincrby(minutes_key(group_id, day), slot, count)
        pipe.expire(minutes_key(group_id, day), KEEP_SECONDS)
    for group_id in {group_id for group_id, _ in taken.recent}:
        entries = [entry for owner, entry in taken.recent if owner == group_id]
        pipe.lpush(recent_key(group_id), *entries)
        pipe.ltrim(recent_key(group_id), 0, RECENT_PER_GROUP - 1)
        pipe.expire(recent_key(group_id), KEEP_SECONDS)
    if taken.groups:
        pipe.zadd(GROUPS_KEY, taken.groups)
        pipe.zremrangebyrank(GROUPS_KEY, 0, -RECENT_GROUPS - 1)
        pipe.expire(GROUPS_KEY, KEEP_SECONDS)
    if taken.used:
        pipe.hset(LAST_USED_KEY, mapping={p: repr(at) for p, at in taken.used.items()})
    try:
        await pipe.execute()
    except (RedisError, OSError):
        logger.warning(
            "activity not recorded: %d rejection counters, %d key uses",
            len(taken.counts),
            len(taken.used),
        )
    if taken.dropped:
        logger.warning("%d limit rejections not counted: buffer full", taken.dropped)


async def activity_flush_loop(client: Any, *, stop: asyncio.Event) -> None:
    """Write this worker's activity every FLUSH_EVERY seconds, and once more when `stop` is set."""
    book = activity()
    async for _ in every(stop, FLUSH_EVERY):
        await activity_flush(client, book)


async def activity_drain(client: Any) -> None:
    """At shutdown: write what this worker's book still holds."""
    book = _books.pop(id(asyncio.get_running_loop()), None)
    if book is not None:
        await activity_flush(client, book)


def rejection_note(rejection: Rejection) -> None:
    """Record a 429 for support (memory only; see the module docstring)."""
    activity().rejection(rejection, now=time.time())


def key_use_note(prefix: str) -> None:
    """Record that a federated key authenticated a request (memory only)."""
    activity().key_used(prefix, now=time.time())
