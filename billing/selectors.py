"""Billing reads: signing secrets, due deliveries, the events API window, delivery health."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, F, Max, Min, Q, QuerySet, Sum
from django.db.models.functions import TruncDay, TruncHour

from billing.models import (
    DeliveryAttempt,
    DeliveryStatus,
    UsageEvent,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
)
from gateway_project.kernel.encryption import decrypt
from groups.models import Workspace


def webhook_secrets_active(*, endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The plaintext secrets to sign with, newest first (two while a rotation overlaps)."""
    rows = WebhookSecret.objects.filter(endpoint=endpoint).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    )
    return [decrypt(row.ciphertext) for row in rows.order_by("-created_at", "-pk")]


def deliveries_due(*, now: datetime, limit: int = 500) -> list[str]:
    """Ids of pending deliveries whose next attempt is due and that nobody holds a lease on."""
    due = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
    due = due.filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
    return list(due.order_by("next_attempt_at").values_list("pk", flat=True)[:limit])


@dataclass(frozen=True)
class EventsWindow:
    """A pinned events query: [start, end), resume after (timestamp, key), optional filters."""

    start: datetime | None
    end: datetime
    after: tuple[datetime, str] | None = None
    api_keys: Sequence[str] = ()
    external_entity_ids: Sequence[str] = ()


def events_page(
    *, workspace: Workspace, window: EventsWindow, limit: int
) -> tuple[list[UsageEvent], bool]:
    """Up to `limit` events of the window by (timestamp, key), and whether more follow."""
    events = _events_in(workspace=workspace, window=window)
    events = events.defer("request_metadata")  # not in the API, and never needed to answer
    rows = list(events.order_by("timestamp", "idempotency_key")[: limit + 1])
    return rows[:limit], len(rows) > limit


def _events_in(*, workspace: Workspace, window: EventsWindow) -> QuerySet[UsageEvent]:
    events = UsageEvent.objects.filter(workspace=workspace, timestamp__lt=window.end)
    if window.start is not None:
        events = events.filter(timestamp__gte=window.start)
    if window.after is not None:
        at, key = window.after
        events = events.filter(Q(timestamp__gt=at) | Q(timestamp=at, idempotency_key__gt=key))
    if window.api_keys:
        events = events.filter(api_key_prefix__in=window.api_keys)
    if window.external_entity_ids:
        events = events.filter(external_entity_id__in=window.external_entity_ids)
    return events


def delivery_health(*, workspace: Workspace, now: datetime) -> dict[str, Any]:
    """Pending, failed and quarantined deliveries, the age in seconds of the oldest pending one,
    and events waiting to be batched or quarantined."""
    stats = WebhookDelivery.objects.filter(endpoint__workspace=workspace).aggregate(
        pending=Count("pk", filter=Q(status=DeliveryStatus.PENDING)),
        failed=Count("pk", filter=Q(status=DeliveryStatus.FAILED)),
        quarantined=Count("pk", filter=Q(status=DeliveryStatus.QUARANTINED)),
        oldest=Min("created_at", filter=Q(status=DeliveryStatus.PENDING)),
    )
    oldest = stats.pop("oldest")
    events = UsageEvent.objects.filter(workspace=workspace).aggregate(
        unbatched=Count("pk", filter=Q(batched_at__isnull=True, quarantined_at__isnull=True)),
        quarantined=Count("pk", filter=Q(quarantined_at__isnull=False)),
    )
    age = (now - oldest).total_seconds() if oldest else None
    return {
        **stats,
        "oldest_pending_age_seconds": age,
        "unbatched_events": events["unbatched"],
        "quarantined_events": events["quarantined"],
    }


@dataclass(frozen=True)
class UsageBucket:
    """Requests and tokens (input + output) of one slug in one hour or day, and what they cost
    when the slug is priced (`currency` empty when it is not)."""

    start: datetime
    requests: int
    tokens: int
    spend: Decimal = Decimal(0)
    currency: str = ""


def usage_by_slug(
    *, workspace: Workspace, until: datetime, buckets: int, unit: str, group_id: str | None = None
) -> dict[str, list[UsageBucket]]:
    """Per slug, `buckets` hours or days up to the one holding `until`; empty ones are zeros."""
    step = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
    last = _bucket_floor(until, unit)
    first = last - step * (buckets - 1)
    events = UsageEvent.objects.filter(
        workspace=workspace, timestamp__gte=first, timestamp__lt=last + step
    )
    if group_id:
        events = events.filter(group_id=group_id)
    trunc = TruncHour if unit == "hour" else TruncDay
    rows = (
        events.annotate(bucket=trunc("timestamp", tzinfo=UTC))
        .values("model_slug", "bucket")
        .annotate(
            requests=Count("pk"),
            tokens=Sum(F("input_tokens") + F("output_tokens")),
            spend=Sum("cost_amount"),
            currency=Max("cost_currency"),
        )
    )
    found = {(r["model_slug"], r["bucket"]): r for r in rows}
    starts = [first + step * i for i in range(buckets)]
    return {
        slug: [_bucket(found.get((slug, start)), start) for start in starts]
        for slug in sorted({slug for slug, _ in found})
    }


def _bucket_floor(moment: datetime, unit: str) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment if unit == "hour" else moment.replace(hour=0)


def _bucket(row: dict[str, Any] | None, start: datetime) -> UsageBucket:
    if row is None:
        return UsageBucket(start=start, requests=0, tokens=0)
    return UsageBucket(
        start=start,
        requests=row["requests"],
        tokens=row["tokens"] or 0,
        spend=row["spend"] or Decimal(0),
        currency=row["currency"] or "",
    )


def delivery_metrics() -> dict[str, int]:
    """For /metrics (deliveries run in Celery workers, so the numbers come from the database):
    deliveries by status, attempts by outcome class, and events waiting to be batched."""
    by_status = dict(
        WebhookDelivery.objects.values_list("status").annotate(n=Count("pk")).order_by()
    )
    attempts = DeliveryAttempt.objects.aggregate(
        ok=Count("pk", filter=Q(status_code__gte=200, status_code__lt=300)),
        total=Count("pk"),
    )
    return {
        **{f"deliveries_{status}": by_status.get(status, 0) for status in DeliveryStatus.values},
        "attempts_succeeded": attempts["ok"],
        "attempts_failed": attempts["total"] - attempts["ok"],
        "events_unbatched": UsageEvent.objects.filter(
            batched_at__isnull=True, quarantined_at__isnull=True
        ).count(),
    }


def quarantine_counts() -> dict[str, int]:
    """Events and deliveries set aside for staff (both counts use a partial index)."""
    return {
        "events": UsageEvent.objects.filter(quarantined_at__isnull=False).count(),
        "deliveries": WebhookDelivery.objects.filter(status=DeliveryStatus.QUARANTINED).count(),
    }
