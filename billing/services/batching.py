"""Usage events -> webhook deliveries: <= 100 events per enabled endpoint, bytes frozen.

Each event is serialized on its own: one that cannot be (an unpaired surrogate, NaN, metadata that
cannot be read back) is quarantined with its error and the others are batched without it. A
workspace whose batching fails for any other reason is skipped for this beat, never the others.
"""

from __future__ import annotations

import logging
import weakref
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Count, Max, Min, QuerySet

from billing.models import UsageEvent, WebhookDelivery, WebhookEndpoint
from billing.sanitize import text_clean
from billing.wire import batch_body, event_bytes
from gateway_project.kernel.ids import new_ulid

DUE_STATEMENT = "billing_workspaces_due"
# The database sessions holding the prepared due query (a psycopg connection is one session).
_due_prepared: weakref.WeakSet[Any] = weakref.WeakSet()
# PostgreSQL's SQLSTATEs for EXECUTE of an unknown statement and PREPARE of a known one.
NO_SUCH_STATEMENT = "26000"
ALREADY_PREPARED = "42P05"
# The beat runs every second, so a partial batch waits at most GATEWAY_WEBHOOK_FLUSH_SECONDS.
BEAT_SECONDS = 1.0
MAX_EVENTS_PER_RUN = 5000
logger = logging.getLogger(__name__)


class _Raced(Exception):
    """Another batcher marked some of these events first; roll back and retry on the next beat."""


def events_batch(*, now: datetime) -> list[str]:
    """Freeze every due unbatched event into deliveries; returns the new delivery ids."""
    created: list[str] = []
    for due in _workspaces_due(now=now):
        try:
            created += _workspace_batch(due=due, now=now)
        except _Raced:
            continue
        except Exception:
            logger.exception("batching failed for workspace %s; the others go on", due.workspace_id)
    return created


class Due(NamedTuple):
    """A workspace's events to batch now: how many, and the time span of all its unbatched
    events (the claim reads only those days' partitions)."""

    workspace_id: str
    take: int
    first: datetime
    last: datetime


def _workspaces_due(*, now: datetime) -> list[Due]:
    """The workspaces to batch: all their events once the oldest is due, else only full
    batches."""
    size = settings.GATEWAY_WEBHOOK_BATCH_SIZE
    flush_before = now - timedelta(
        seconds=max(0.0, settings.GATEWAY_WEBHOOK_FLUSH_SECONDS - BEAT_SECONDS)
    )
    due = []
    for row in _due_counts():
        take = row["n"] if row["oldest"] <= flush_before else row["n"] // size * size
        if take:
            count = min(take, MAX_EVENTS_PER_RUN)
            due.append(Due(row["workspace_id"], count, row["first"], row["last"]))
    return due


def _due_query() -> QuerySet[UsageEvent, dict[str, Any]]:
    """Per workspace: its events waiting for a batch (`n`), when the oldest was stored, and
    their time span."""
    return (
        UsageEvent.objects.filter(batched_at__isnull=True, quarantined_at__isnull=True)
        .values("workspace_id")
        .annotate(
            n=Count("pk"),
            oldest=Min("created_at"),
            first=Min("timestamp"),
            last=Max("timestamp"),
        )
    )


def _due_counts() -> list[dict[str, Any]]:
    """The rows of `_due_query`.

    An unbatched event may be of any day, so on PostgreSQL the query reads every partition of
    the events table and planning it costs ~70 ms at the 400 days of the default retention, each
    second. It is prepared once per database connection instead: a run only executes it (~2 ms).
    PostgreSQL replans it by itself when a partition is attached or dropped."""
    query = _due_query()
    sql, params = query.query.sql_with_params()
    if connection.vendor != "postgresql" or params:
        return list(query)
    with connection.cursor() as cursor:
        session = connection.connection
        if session not in _due_prepared:
            _due_prepare(cursor, sql)
            _due_prepared.add(session)
        try:
            cursor.execute(f"EXECUTE {DUE_STATEMENT}")
        except DatabaseError as error:
            # Behind a pooler that lends a server session per transaction (pgbouncer's
            # transaction mode), the session that prepared it may not be the one executing it.
            if connection.in_atomic_block or not _sqlstate_is(error, NO_SUCH_STATEMENT):
                raise
            _due_prepare(cursor, sql)
            cursor.execute(f"EXECUTE {DUE_STATEMENT}")
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _due_prepare(cursor: Any, sql: str) -> None:
    try:
        cursor.execute(f"PREPARE {DUE_STATEMENT} AS {sql}")
    except DatabaseError as error:
        # A pooled server session that prepared it for an earlier client keeps it.
        if connection.in_atomic_block or not _sqlstate_is(error, ALREADY_PREPARED):
            raise


def _sqlstate_is(error: DatabaseError, sqlstate: str) -> bool:
    return getattr(error.__cause__, "sqlstate", None) == sqlstate


def _events_claim(*, due: Due, now: datetime) -> list[UsageEvent]:
    """Lock and mark up to `due.take` unbatched events of a workspace, oldest first, within the
    span the due query saw: on PostgreSQL only those days' partitions are planned and read (an
    event stored since, outside it, waits for the next beat)."""
    pending = UsageEvent.objects.filter(
        workspace_id=due.workspace_id,
        batched_at__isnull=True,
        quarantined_at__isnull=True,
        timestamp__gte=due.first,
        timestamp__lte=due.last,
    )
    if connection.vendor == "postgresql":
        # Concurrent batchers take disjoint rows instead of queueing on each other's locks.
        pending = pending.select_for_update(skip_locked=True)
    events = list(pending.order_by("timestamp", "idempotency_key")[: due.take])
    # The conditional UPDATE is what makes it exactly-once where row locks do not exist (SQLite).
    marked = UsageEvent.objects.filter(
        pk__in=[e.pk for e in events], batched_at__isnull=True, **_days_of(events)
    ).update(batched_at=now)
    if marked != len(events):
        raise _Raced
    return events


def _days_of(events: list[UsageEvent]) -> dict[str, datetime]:
    """The events' time span, so an update by key reads only their days' partitions (PostgreSQL)
    instead of every partition's primary key index."""
    if not events:
        return {}
    moments = [event.timestamp for event in events]
    return {"timestamp__gte": min(moments), "timestamp__lte": max(moments)}


@transaction.atomic
def _workspace_batch(*, due: Due, now: datetime) -> list[str]:
    """One transaction: mark the events batched and create one delivery per batch and endpoint."""
    workspace_id = due.workspace_id
    events = _events_claim(due=due, now=now)
    parts = _serialized(events=events, now=now)
    endpoints = list(WebhookEndpoint.objects.filter(workspace_id=workspace_id, enabled=True))
    size = settings.GATEWAY_WEBHOOK_BATCH_SIZE
    deliveries = []
    for start in range(0, len(parts), size):
        chunk = parts[start : start + size]
        body = batch_body([part for _, part in chunk])
        # One batch key per body ties each event to the deliveries carrying it (support's view).
        batch = new_ulid()
        UsageEvent.objects.filter(pk__in=[pk for pk, _ in chunk], **_days_of(events)).update(
            batch=batch
        )
        deliveries += [
            WebhookDelivery(
                endpoint=endpoint,
                body=body,
                event_count=len(chunk),
                batch=batch,
                next_attempt_at=now,
            )
            for endpoint in endpoints
        ]
    WebhookDelivery.objects.bulk_create(deliveries)
    return [d.id for d in deliveries]


def _serialized(*, events: list[UsageEvent], now: datetime) -> list[tuple[str, bytes]]:
    """Each event's key and wire bytes; one that cannot be serialized is quarantined instead."""
    parts = []
    for event in events:
        try:
            parts.append((event.pk, event_bytes(event)))
        except Exception as exc:  # noqa: BLE001 - one event must not hold back its batch
            error = text_clean(f"{type(exc).__name__}: {exc}")[:500]
            logger.error("usage event %s quarantined: %s", event.pk, error)
            UsageEvent.objects.filter(pk=event.pk, timestamp=event.timestamp).update(
                batched_at=None, quarantined_at=now, quarantine_error=error
            )
    return parts
