"""The usage rollup: events summed per workspace, group, slug and hour, so that the usage dashboard
never scans events.

The watermark (`UsageRollupMark.through`) is on the events' insertion time, `created_at`: every
event created before it is counted in `UsageRollup` exactly once, and none created at or after it
is (those are the dashboard's tail, read from events through the `created_at` index). One advance
adds the events of [through, upper) and moves the watermark to `upper` in one transaction, under
a lock on the watermark row: an advance that fails adds nothing, two never overlap, and running one
again adds nothing twice. A replayed event is never a second row (ingest skips stored request ids),
so it is never counted twice either.

`upper` stays `SETTLE` behind both the clock and the start of the oldest transaction still
writing, so a batch being stored while the watermark moves cannot land behind it unseen. That holds
because an event's `created_at` is never older than the transaction storing it: on PostgreSQL the
column's default, now(), fills it (ingest's COPY leaves it out, however early the batch was
prepared); elsewhere the ORM stamps it when it saves the row.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Min, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from billing.models import UsageEvent, UsageRollup, UsageRollupMark
from billing.selectors import ROLLUP_EPOCH, ROLLUP_MARK_ID

# How far the watermark stays behind the clock and the oldest writing transaction.
SETTLE = timedelta(seconds=60)
# The most insertion time one transaction rolls up (a backlog is caught up in several).
CHUNK = timedelta(hours=6)
_KEY = ("workspace_id", "group_id", "hour", "model_slug", "cost_currency")
_SUMS = ("requests", "input_tokens", "output_tokens", "cost_amount")


def usage_rollup_advance(*, now: datetime | None = None, max_chunks: int = 8) -> int:
    """Roll up the events created since the watermark, up to `SETTLE` ago; returns how many."""
    now = now or timezone.now()
    upper = min(now, _oldest_write_started() or now) - SETTLE
    _mark_ensure()
    counted = 0
    for _ in range(max_chunks):
        with transaction.atomic():
            mark = UsageRollupMark.objects.select_for_update().get(pk=ROLLUP_MARK_ID)
            if mark.through >= upper:
                break
            start = _first_created(since=mark.through, before=upper)
            until = upper if start is None else min(upper, max(start, mark.through) + CHUNK)
            counted += _add(since=mark.through, before=until)
            mark.through = until
            mark.save(update_fields=["through"])
            if until >= upper:
                break
    return counted


def _mark_ensure() -> None:
    if UsageRollupMark.objects.filter(pk=ROLLUP_MARK_ID).exists():
        return
    try:
        with transaction.atomic():
            UsageRollupMark.objects.create(pk=ROLLUP_MARK_ID, through=ROLLUP_EPOCH)
    except IntegrityError:
        pass  # another advance created it first


def _oldest_write_started() -> datetime | None:
    """When the oldest other transaction that wrote something started (PostgreSQL only)."""
    if connection.vendor != "postgresql":
        return None  # SQLite has one writer at a time: nothing is in flight while this runs
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT min(xact_start) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL"
        )
        row = cursor.fetchone()
    return row[0] if row else None


def _first_created(*, since: datetime, before: datetime) -> datetime | None:
    """The first insertion time in [since, before), so a quiet stretch is skipped at once."""
    found = UsageEvent.objects.filter(created_at__gte=since, created_at__lt=before)
    first: datetime | None = found.aggregate(first=Min("created_at"))["first"]
    return first


def _add(*, since: datetime, before: datetime) -> int:
    """Add the events created in [since, before) to the rollup, per group and per workspace."""
    rows = (
        UsageEvent.objects.filter(created_at__gte=since, created_at__lt=before)
        .annotate(hour=TruncHour("timestamp", tzinfo=UTC))
        .values("workspace_id", "group_id", "hour", "model_slug", "cost_currency")
        .annotate(
            requests=Count("pk"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cost_amount=Sum("cost_amount"),
        )
        .order_by()
    )
    sums: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0, 0, Decimal(0)])
    counted = 0
    for row in rows:
        counted += row["requests"]
        values = [row[name] or 0 for name in _SUMS]
        for group in (row["group_id"], ""):
            key = (row["workspace_id"], group, row["hour"], row["model_slug"], row["cost_currency"])
            sums[key] = [a + b for a, b in zip(sums[key], values, strict=True)]
    if sums:
        _merge(sums)
    return counted


def _merge(sums: dict[tuple[Any, ...], list[Any]]) -> None:
    """Add `sums` to the stored rows (only an advance writes them, under the watermark's lock)."""
    keys = list(sums)
    stored: dict[tuple[Any, ...], UsageRollup] = {}
    for at in range(0, len(keys), 500):
        part = keys[at : at + 500]
        found = UsageRollup.objects.filter(
            workspace_id__in={key[0] for key in part},
            group_id__in={key[1] for key in part},
            hour__in={key[2] for key in part},
        )
        for row in found:
            stored[tuple(getattr(row, name) for name in _KEY)] = row
    fresh: list[UsageRollup] = []
    changed: list[UsageRollup] = []
    for key, values in sums.items():
        if key not in stored:
            fields = dict(zip(_KEY, key, strict=True)) | dict(zip(_SUMS, values, strict=True))
            fresh.append(UsageRollup(**fields))
            continue
        row = stored[key]
        for name, value in zip(_SUMS, values, strict=True):
            setattr(row, name, getattr(row, name) + value)
        changed.append(row)
    UsageRollup.objects.bulk_create(fresh, batch_size=1000)
    UsageRollup.objects.bulk_update(changed, list(_SUMS), batch_size=1000)
