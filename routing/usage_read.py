"""The usage API's read of the limit counters: this day's and this month's usage of a group's DAY
and MONTH limits (SPEND ones in micro-units)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import redis
from redis.cluster import RedisCluster as SyncRedisCluster

from routing.limit_counters import (
    CALENDAR_UNITS,
    UNAVAILABLE,
    LimitsUnavailable,
    counter_key,
    sync_client,
)

if TYPE_CHECKING:
    from groups.models import Group
    from groups.selectors import EnforcedLimit


def group_usage_read(
    *,
    group: Group | None,
    enforced: Mapping[str, Sequence[EnforcedLimit]],
    now: float | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Per slug, the current period's usage of the group's DAY and MONTH limits (the usage API's
    body; now: a test clock, unix seconds, else Redis TIME)."""
    try:
        client = sync_client()
        clock = now if now is not None else _redis_clock(client)
        day = datetime.fromtimestamp(clock, UTC).date()
        calendar = {
            slug: [lim for lim in limits if lim.unit in CALENDAR_UNITS]
            for slug, limits in enforced.items()
        }
        suffix = {"DAY": f"{day:%Y%m%d}", "MONTH": f"{day:%Y%m}"}
        keys = [
            f"{counter_key(limit=lim, slug=slug)}:{suffix[lim.unit]}"
            for slug, limits in calendar.items()
            for lim in limits
        ]
        values = iter(client.mget(keys) if keys else [])
    except UNAVAILABLE as exc:
        raise LimitsUnavailable("Usage counters are temporarily unavailable.") from exc
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    month_end = datetime(day.year + day.month // 12, day.month % 12 + 1, 1, tzinfo=UTC)
    reset_at = {unit: _stamp(moment) for unit, moment in (("DAY", midnight), ("MONTH", month_end))}
    return {
        slug: _usage_rows(limits=limits, values=[next(values) for _ in limits], reset_at=reset_at)
        for slug, limits in calendar.items()
    }


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _redis_clock(client: redis.Redis | SyncRedisCluster) -> float:
    seconds, microseconds = client.time()
    return seconds + microseconds / 1_000_000


def _usage_rows(
    *, limits: list[EnforcedLimit], values: list[bytes | str | None], reset_at: dict[str, str]
) -> list[dict[str, Any]]:
    # CASCADING chains can hold several counters per (type, unit): show the one with least room.
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for limit, value in zip(limits, values, strict=True):
        usage = None if value is None else int(value)
        row = {
            "type": limit.type,
            "unit": limit.unit,
            "threshold": int(limit.threshold),
            "current_usage": usage,
            "reset_at": None if usage is None else reset_at[limit.unit],
        }
        current = best.get((limit.type, limit.unit))
        if current is None or _room(row) < _room(current):
            best[(limit.type, limit.unit)] = row
    return list(best.values())


def _room(row: dict[str, Any]) -> tuple[int, int]:
    return row["threshold"] - (row["current_usage"] or 0), row["threshold"]
