"""Billing reads: signing secrets, due deliveries, the events API window, usage per slug (billing
health, which also reads Redis, is billing/health.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, F, Max, Q, QuerySet, Sum
from django.db.models.functions import TruncDay, TruncHour

from billing.models import (
    DeliveryAttempt,
    DeliveryStatus,
    UsageEvent,
    UsageRollup,
    UsageRollupMark,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
)
from billing.wire import EVENT_WIRE_FIELDS
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
) -> tuple[list[dict[str, Any]], bool]:
    """Up to `limit` events of the window by (timestamp, key) as rows of the wire's columns
    (`billing.wire.event_row_wire`), and whether more follow."""
    events = _events_in(workspace=workspace, window=window)
    # Rows, not instances: a page reads only the wire's columns, and building 100 model
    # instances cost more than the query.
    rows = list(
        events.order_by("timestamp", "idempotency_key").values(*EVENT_WIRE_FIELDS)[: limit + 1]
    )
    return rows[:limit], len(rows) > limit


def _events_in(*, workspace: Workspace, window: EventsWindow) -> QuerySet[UsageEvent]:
    events = UsageEvent.objects.filter(workspace=workspace, timestamp__lt=window.end)
    if window.start is not None:
        events = events.filter(timestamp__gte=window.start)
    if window.after is not None:
        at, key = window.after
        # `timestamp >= at` on its own too: the index range then starts at the cursor, instead of
        # the window's start with every row before the cursor filtered out one by one.
        events = events.filter(timestamp__gte=at).filter(
            Q(timestamp__gt=at) | Q(timestamp=at, idempotency_key__gt=key)
        )
    if window.api_keys:
        events = events.filter(api_key_prefix__in=window.api_keys)
    if window.external_entity_ids:
        events = events.filter(external_entity_id__in=window.external_entity_ids)
    return events


@dataclass(frozen=True)
class UsageTotals:
    """Requests and tokens of one key or slug: today (UTC) and this month so far."""

    requests_today: int
    tokens_today: int
    requests_month: int
    tokens_month: int
    input_tokens_month: int
    output_tokens_month: int
    last_at: datetime | None


def usage_totals(*, group_id: str, by: str, now: datetime) -> dict[str, UsageTotals]:
    """A group's usage this month by `by` (`api_key_prefix` or `model_slug`), one query."""
    if by not in ("api_key_prefix", "model_slug"):
        raise ValueError(f"usage totals by {by!r}")
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    today = Q(timestamp__gte=day)
    tokens = F("input_tokens") + F("output_tokens")
    rows = (
        UsageEvent.objects.filter(group_id=group_id, timestamp__gte=month)
        .values(by)
        .annotate(
            requests_today=Count("pk", filter=today),
            tokens_today=Sum(tokens, filter=today),
            requests_month=Count("pk"),
            tokens_month=Sum(tokens),
            input_tokens_month=Sum("input_tokens"),
            output_tokens_month=Sum("output_tokens"),
            last_at=Max("timestamp"),
        )
        .order_by()
    )
    return {row[by]: _totals(row) for row in rows}


def _totals(row: dict[str, Any]) -> UsageTotals:
    return UsageTotals(
        requests_today=row["requests_today"],
        tokens_today=row["tokens_today"] or 0,
        requests_month=row["requests_month"],
        tokens_month=row["tokens_month"] or 0,
        input_tokens_month=row["input_tokens_month"] or 0,
        output_tokens_month=row["output_tokens_month"] or 0,
        last_at=row["last_at"],
    )


@dataclass(frozen=True)
class EventDeliveries:
    """A usage event and the webhook deliveries carrying it (none yet: not batched)."""

    event: UsageEvent
    deliveries: list[WebhookDelivery]

    @property
    def state(self) -> str:
        """Where the event stands on its way to billing."""
        if self.event.quarantined_at is not None:
            return "quarantined"
        if self.event.batched_at is None:
            return "waiting for batching"
        if not self.event.batch:
            return "batched before deliveries were linked"
        return _batch_state({delivery.status for delivery in self.deliveries})


def events_recent(*, group_id: str, limit: int = 20) -> list[EventDeliveries]:
    """The group's newest usage events with their deliveries (two queries)."""
    events = list(
        UsageEvent.objects.filter(group_id=group_id)
        .defer("request_metadata")
        .order_by("-timestamp", "-idempotency_key")[:limit]
    )
    batches = {event.batch for event in events if event.batch}
    by_batch: dict[str, list[WebhookDelivery]] = {}
    found = (
        WebhookDelivery.objects.filter(batch__in=batches).defer("body").select_related("endpoint")
    )
    for delivery in found.order_by("created_at", "id"):
        by_batch.setdefault(delivery.batch, []).append(delivery)
    return [EventDeliveries(event, by_batch.get(event.batch, [])) for event in events]


def delivery_group_ids(*, delivery_id: str) -> list[str]:
    """The groups whose events a delivery carries, read from its frozen body."""
    body = WebhookDelivery.objects.filter(pk=delivery_id).values_list("body", flat=True).first()
    if body is None:
        return []
    try:
        events = json.loads(bytes(body))["data"]["events"]
        return sorted({str(event["groupId"]) for event in events})
    except (KeyError, TypeError, ValueError):
        return []


BILLING_STATES = ("delivered", "in delivery", "failed", "waiting for batching", "quarantined")


def events_billing_state(*, group_id: str, since: datetime) -> dict[str, int]:
    """How many of the group's events since `since` reached each billing state (three queries).

    An event is delivered once every delivery carrying it is; batched with no endpoint enabled,
    it counts as `no webhook endpoint`."""
    events = UsageEvent.objects.filter(group_id=group_id, timestamp__gte=since)
    unbatched = events.aggregate(
        waiting=Count("pk", filter=Q(batched_at__isnull=True, quarantined_at__isnull=True)),
        quarantined=Count("pk", filter=Q(quarantined_at__isnull=False)),
        unlinked=Count("pk", filter=Q(batched_at__isnull=False, batch="")),
    )
    per_batch = dict(
        events.exclude(batch="").values_list("batch").annotate(n=Count("pk")).order_by()
    )
    statuses: dict[str, set[str]] = {}
    rows = WebhookDelivery.objects.filter(batch__in=list(per_batch)).values_list("batch", "status")
    for batch, status in rows:
        statuses.setdefault(batch, set()).add(status)
    counts = dict.fromkeys(BILLING_STATES, 0)
    counts["waiting for batching"] = unbatched["waiting"]
    counts["quarantined"] = unbatched["quarantined"]
    for batch, count in per_batch.items():
        state = _batch_state(statuses.get(batch, set()))
        counts[state] = counts.get(state, 0) + count
    if unbatched["unlinked"]:
        counts["batched before deliveries were linked"] = unbatched["unlinked"]
    return counts


def _batch_state(statuses: set[str]) -> str:
    if not statuses:
        return "no webhook endpoint"
    if statuses == {DeliveryStatus.DELIVERED}:
        return "delivered"
    if statuses & {DeliveryStatus.FAILED, DeliveryStatus.QUARANTINED, DeliveryStatus.DISABLED}:
        return "failed"
    return "in delivery"


@dataclass(frozen=True)
class UsageBucket:
    """Requests and tokens (input + output) of one slug in one hour or day, and what they cost
    when the slug is priced (`currency` empty when it is not)."""

    start: datetime
    requests: int
    tokens: int
    spend: Decimal = Decimal(0)
    currency: str = ""


ROLLUP_MARK_ID = 1
ROLLUP_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rollup_through() -> datetime:
    """The usage rollup's watermark: events created before it are in the rollup (the epoch
    before its first advance)."""
    found = UsageRollupMark.objects.filter(pk=ROLLUP_MARK_ID).values_list("through", flat=True)
    return found.first() or ROLLUP_EPOCH


def usage_by_slug(
    *, workspace: Workspace, until: datetime, buckets: int, unit: str, group_id: str | None = None
) -> dict[str, list[UsageBucket]]:
    """Per slug, `buckets` hours or days up to the one holding `until`; empty ones are zeros.

    Read from the rollup (billing/services/rollup.py) plus the events created since its
    watermark, so the sums equal those of the events themselves without scanning them."""
    step = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
    last = _bucket_floor(until, unit)
    first = last - step * (buckets - 1)
    trunc = TruncHour if unit == "hour" else TruncDay
    through = rollup_through()
    rolled = UsageRollup.objects.filter(
        workspace=workspace, group_id=group_id or "", hour__gte=first, hour__lt=last + step
    )
    tail = UsageEvent.objects.filter(workspace=workspace, created_at__gte=through).filter(
        timestamp__gte=first, timestamp__lt=last + step
    )
    if group_id:
        tail = tail.filter(group_id=group_id)
    found: dict[tuple[str, datetime], dict[str, Any]] = {}
    rollup_rows = (
        rolled.annotate(bucket=trunc("hour", tzinfo=UTC))
        .values("model_slug", "bucket")
        .annotate(
            requests=Sum("requests"),
            tokens=Sum(F("input_tokens") + F("output_tokens")),
            spend=Sum("cost_amount"),
            currency=Max("cost_currency"),
        )
        .order_by()
    )
    tail_rows = (
        tail.annotate(bucket=trunc("timestamp", tzinfo=UTC))
        .values("model_slug", "bucket")
        .annotate(
            requests=Count("pk"),
            tokens=Sum(F("input_tokens") + F("output_tokens")),
            spend=Sum("cost_amount"),
            currency=Max("cost_currency"),
        )
        .order_by()
    )
    for rows in (rollup_rows, tail_rows):
        for row in rows:
            key = (row["model_slug"], row["bucket"])
            found[key] = _bucket_add(found[key], row) if key in found else row
    starts = [first + step * i for i in range(buckets)]
    return {
        slug: [_bucket(found.get((slug, start)), start) for start in starts]
        for slug in sorted({slug for slug, _ in found})
    }


def _bucket_add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two partial sums of one bucket (the rollup's and the tail's) as one."""
    spends = [row["spend"] for row in (a, b) if row["spend"] is not None]
    return {
        "requests": a["requests"] + b["requests"],
        "tokens": (a["tokens"] or 0) + (b["tokens"] or 0),
        "spend": sum(spends, Decimal(0)) if spends else None,
        "currency": max(a["currency"] or "", b["currency"] or ""),
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
