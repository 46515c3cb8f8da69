"""Limit rejections and key use, recorded off the request path and bounded (routing/activity.py),
read back for support (routing/activity_read.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from django.conf import settings

from keys.models import ApiKey
from routing import activity
from routing.activity import ActivityBook, Rejection, activity_flush
from routing.activity_read import (
    group_rejections,
    group_rejections_recent,
    groups_rejected_recently,
    keys_last_used_pending,
    keys_last_used_sync,
)
from routing.redis_pool import close_all, main_redis
from routing.tasks import keys_last_used_sync_task
from tests.proxy.conftest import SLUG, compatible_target, tenant_build

NOW = datetime(2026, 12, 3, 10, 21, 7, tzinfo=UTC)


def _rejection(group: str = "grp_a", *, unit: str = "minute", slug: str = SLUG) -> Rejection:
    return Rejection(
        group_id=group,
        key_prefix="sky_aaaaaaaaaaaa",
        slug=slug,
        limit_type="request",
        limit_unit=unit,
        threshold=5,
        limit_group=group,
        reason=f"Rate limit exceeded for model '{slug}': REQUEST limit of 5 per minute.",
    )


def _flush(book: ActivityBook) -> None:
    async def run() -> None:
        await activity_flush(main_redis(), book)
        await close_all()

    asyncio.run(run())


def test_rejections_are_counted_per_minute_and_limit_with_their_reasons() -> None:
    book = ActivityBook()
    for second in (0, 10, 70):
        book.rejection(_rejection(), now=(NOW + timedelta(seconds=second)).timestamp())
    book.rejection(_rejection(unit="day"), now=NOW.timestamp())

    _flush(book)

    rows = group_rejections(group_id="grp_a", now=NOW + timedelta(minutes=2))
    assert [(r.type, r.unit, r.threshold, r.count) for r in rows] == [
        ("REQUEST", "MINUTE", 5, 3),
        ("REQUEST", "DAY", 5, 1),
    ]
    assert [(at.strftime("%H:%M"), n) for at, n in rows[0].per_minute] == [
        ("10:21", 2),
        ("10:22", 1),
    ]
    recent = group_rejections_recent(group_id="grp_a")
    assert len(recent) == 4
    assert recent[0].key_prefix == "sky_aaaaaaaaaaaa"
    assert "REQUEST limit of 5 per minute" in recent[0].reason
    assert groups_rejected_recently()[0][0] == "grp_a"
    assert book.empty()


def test_rejections_older_than_the_window_are_not_counted() -> None:
    book = ActivityBook()
    book.rejection(_rejection(), now=(NOW - timedelta(hours=30)).timestamp())
    book.rejection(_rejection(), now=NOW.timestamp())
    _flush(book)

    rows = group_rejections(group_id="grp_a", now=NOW, hours=24)

    assert [row.count for row in rows] == [1]


def test_a_flood_of_rejections_stays_bounded_in_memory_and_in_redis(monkeypatch: Any) -> None:
    monkeypatch.setattr(activity, "MAX_PENDING", 3)
    book = ActivityBook()
    for i in range(1000):
        book.rejection(_rejection(slug=f"acme/m{i % 10}"), now=NOW.timestamp() + i)

    assert len(book.counts) == 3
    assert book.dropped > 0
    assert len(book.recent) == activity.MAX_PENDING_RECENT
    _flush(book)
    client = redis.Redis.from_url(settings.REDIS_URL)
    assert client.llen(activity.recent_key("grp_a")) == activity.RECENT_PER_GROUP
    assert 0 < client.ttl(activity.recent_key("grp_a")) <= activity.KEEP_SECONDS
    assert 0 < client.ttl(activity.minutes_key("grp_a", "20261203")) <= activity.KEEP_SECONDS


def test_a_key_use_is_noted_at_most_once_a_minute_per_key() -> None:
    book = ActivityBook()

    for second in (0, 1, 30, 59):
        book.key_used("sky_k1", now=NOW.timestamp() + second)
    first = dict(book.used)
    book.take()
    book.key_used("sky_k1", now=NOW.timestamp() + 61)

    assert first == {"sky_k1": NOW.timestamp()}
    assert book.used == {"sky_k1": NOW.timestamp() + 61}


def test_key_use_reaches_the_database_and_never_moves_last_used_back(
    transactional_db: None, workspace: Any
) -> None:
    tenant = tenant_build(workspace=workspace, targets=[compatible_target("http://127.0.0.1:9/v1")])
    later = NOW + timedelta(hours=1)
    ApiKey.objects.filter(prefix=tenant.prefix).update(last_used_at=later)
    book = ActivityBook()
    book.key_used(tenant.prefix, now=NOW.timestamp())
    _flush(book)
    assert keys_last_used_pending(prefixes=[tenant.prefix]) == {tenant.prefix: NOW}

    assert keys_last_used_sync() == 1

    assert ApiKey.objects.get(prefix=tenant.prefix).last_used_at == later
    assert keys_last_used_pending(prefixes=[tenant.prefix]) == {}
    ApiKey.objects.filter(prefix=tenant.prefix).update(last_used_at=None)
    book.take()
    book.noted.clear()
    book.key_used(tenant.prefix, now=NOW.timestamp())
    _flush(book)
    assert keys_last_used_sync_task.apply().get() == 1
    assert ApiKey.objects.get(prefix=tenant.prefix).last_used_at == NOW
