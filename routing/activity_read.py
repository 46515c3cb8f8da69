"""Reads of the activity routing/activity.py records: a group's limit rejections, keys' last use,
and the move of key use into the database (Celery beat)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django_redis import get_redis_connection
from redis.exceptions import RedisError

from keys.services import api_keys_last_used_record
from routing.activity import GROUPS_KEY, LAST_USED_KEY, minutes_key, recent_key

logger = logging.getLogger(__name__)

# Read and clear in one step: a use noted between the two would otherwise be lost.
_TAKE_SCRIPT = """
local taken = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return taken
"""


@dataclass(frozen=True)
class RejectedLimit:
    """How often one limit rejected a group's requests over a window, and when last."""

    slug: str
    type: str
    unit: str
    threshold: int
    limit_group: str
    count: int
    last_minute: datetime
    per_minute: list[tuple[datetime, int]]


@dataclass(frozen=True)
class RecentRejection:
    """One recorded 429."""

    at: datetime
    slug: str
    type: str
    unit: str
    threshold: int
    limit_group: str
    key_prefix: str
    reason: str


def _client() -> Any:
    return get_redis_connection("default")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def group_rejections(*, group_id: str, now: datetime, hours: int = 24) -> list[RejectedLimit]:
    """Per limit, the group's rejections over the last `hours` (at most 7 days), most first."""
    since = now - timedelta(hours=min(hours, 7 * 24))
    ordered = [
        (since.date() + timedelta(days=i)).strftime("%Y%m%d")
        for i in range((now.date() - since.date()).days + 1)
    ]
    pipe = _client().pipeline(transaction=False)
    for day in ordered:
        pipe.hgetall(minutes_key(group_id, day))
    found: dict[tuple[str, ...], dict[datetime, int]] = {}
    for day, fields in zip(ordered, pipe.execute(), strict=True):
        for raw, count in fields.items():
            minute, *limit = _text(raw).split("|")
            at = datetime.strptime(day + minute, "%Y%m%d%H%M").replace(tzinfo=UTC)
            if at >= since.replace(second=0, microsecond=0) and len(limit) == 5:
                per = found.setdefault(tuple(limit), {})
                per[at] = per.get(at, 0) + int(count)
    rows = [_rejected_limit(limit, per) for limit, per in found.items()]
    return sorted(rows, key=lambda row: (-row.count, row.slug, row.type, row.unit))


def _rejected_limit(limit: tuple[str, ...], per: dict[datetime, int]) -> RejectedLimit:
    slug, type_, unit, threshold, limit_group = limit
    minutes = sorted(per.items())
    return RejectedLimit(
        slug=slug,
        type=type_,
        unit=unit,
        threshold=int(threshold),
        limit_group=limit_group,
        count=sum(per.values()),
        last_minute=minutes[-1][0],
        per_minute=minutes,
    )


def group_rejections_recent(*, group_id: str, limit: int = 20) -> list[RecentRejection]:
    """The group's last rejections, newest first (unreadable entries are skipped)."""
    rows = []
    for raw in _client().lrange(recent_key(group_id), 0, limit - 1):
        try:
            item = json.loads(raw)
            rows.append(
                RecentRejection(
                    at=datetime.fromtimestamp(float(item["at"]), UTC),
                    slug=str(item["slug"]),
                    type=str(item["type"]),
                    unit=str(item["unit"]),
                    threshold=int(item["threshold"]),
                    limit_group=str(item["limit_group"]),
                    key_prefix=str(item["key_prefix"]),
                    reason=str(item["reason"]),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return rows


def groups_rejected_recently(*, limit: int = 20) -> list[tuple[str, datetime]]:
    """The groups rejected last: (group id, time of the last rejection), newest first."""
    rows = _client().zrevrange(GROUPS_KEY, 0, limit - 1, withscores=True)
    return [(_text(group_id), datetime.fromtimestamp(at, UTC)) for group_id, at in rows]


def keys_last_used_pending(*, prefixes: list[str]) -> dict[str, datetime]:
    """Uses noted by the gateway and not yet moved into the database, by key prefix."""
    if not prefixes:
        return {}
    try:
        values = _client().hmget(LAST_USED_KEY, prefixes)
    except (RedisError, OSError):
        return {}
    return {
        prefix: datetime.fromtimestamp(float(value), UTC)
        for prefix, value in zip(prefixes, values, strict=True)
        if value is not None
    }


def keys_last_used_sync() -> int:
    """Move the noted key uses into `ApiKey.last_used_at`; returns how many keys were noted."""
    client = _client()
    raw = client.eval(_TAKE_SCRIPT, 1, LAST_USED_KEY)
    pairs = dict(zip(raw[::2], raw[1::2], strict=True))
    used = {}
    for prefix, value in pairs.items():
        try:
            used[_text(prefix)] = datetime.fromtimestamp(float(value), UTC)
        except (TypeError, ValueError, OverflowError):
            logger.warning("unreadable key use of %r dropped", prefix)
    if used:
        try:
            api_keys_last_used_record(used=used)
        except Exception:
            # Put them back for the next run (a newer use noted meanwhile wins).
            for prefix, at in used.items():
                client.hsetnx(LAST_USED_KEY, prefix, repr(at.timestamp()))
            raise
    return len(used)
