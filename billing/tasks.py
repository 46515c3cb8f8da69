"""Celery tasks of billing. The webhook schedule lives in the database, never in countdowns.

Beat: `usage_ingest_task` (every second) moves usage events from the Redis stream into the
database. `deliveries_enqueue_due` (every second) freezes due usage events into deliveries,
releases expired leases, enqueues due deliveries and publishes the quarantine counts for /metrics;
each step runs even when another failed, and each notes its outcome (billing/liveness.py).
`usage_rollup_task` (every minute) sums new events into the usage dashboard's rollup.
`delivery_attempt` makes one attempt. A Redis marker per queued delivery keeps a backlog from being
enqueued again on every beat. `billing.heartbeat` (every 5 s) proves beat and a worker are alive.
`events_partitions_task` (hourly) keeps the usage event table's daily partitions on PostgreSQL:
created a week ahead, dropped after the retention once all their events are final.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from celery import shared_task
from celery.signals import before_task_publish, worker_ready
from django.core.cache import cache
from django.utils import timezone
from django_redis import get_redis_connection

from billing.liveness import BEAT, WORKER, heartbeat_note, step_note
from billing.selectors import deliveries_due, quarantine_counts
from billing.services.attempts import (
    deliveries_lease_reclaim,
    delivery_attempt_run,
    lease_seconds,
)
from billing.services.batching import events_batch
from billing.services.ingest import usage_ingest
from billing.services.partitions import events_partitions_maintain
from billing.services.pipeline_metrics import usage_backlog_check
from billing.services.rollup import usage_rollup_advance
from billing.services.usage import (
    BILLING_METRICS_KEY,
    QUARANTINED_DELIVERIES_METRIC,
    QUARANTINED_EVENTS_METRIC,
)

logger = logging.getLogger(__name__)
HEARTBEAT_TASK = "billing.heartbeat"


@shared_task(name=HEARTBEAT_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def heartbeat() -> None:
    """A worker ran a task beat sent: both are alive (beat: every 5 seconds)."""
    heartbeat_note(role=WORKER)


@before_task_publish.connect  # type: ignore[untyped-decorator]
def _beat_heartbeat(sender: str | None = None, **kwargs: Any) -> None:
    # Only beat publishes the heartbeat task, so this runs in the beat process.
    if sender == HEARTBEAT_TASK:
        heartbeat_note(role=BEAT)


@worker_ready.connect  # type: ignore[untyped-decorator]
def _worker_started(**kwargs: Any) -> None:
    heartbeat_note(role=WORKER)


@shared_task(name="billing.usage_ingest", ignore_result=True)  # type: ignore[untyped-decorator]
def usage_ingest_task() -> int:
    """Move usage events from the Redis stream into the database (beat: every second)."""
    try:
        # Before ingest: a backlog is reported even while the database refuses every batch.
        usage_backlog_check(client=get_redis_connection("default"))
        stored = usage_ingest()
    except Exception as exc:
        step_note(step="usage_ingest", error=f"{type(exc).__name__}: {exc}")
        raise
    step_note(step="usage_ingest")
    return stored


@shared_task(name="billing.events_partitions", ignore_result=True)  # type: ignore[untyped-decorator]
def events_partitions_task() -> int:
    """Create the usage event partitions ahead, drop those past retention (beat: hourly);
    returns how many were dropped."""
    retired = events_partitions_maintain()
    return len(retired.dropped) if retired is not None else 0


@shared_task(name="billing.usage_rollup", ignore_result=True)  # type: ignore[untyped-decorator]
def usage_rollup_task() -> int:
    """Add the events stored since the last run to the dashboard's rollup (beat: every minute)."""
    try:
        counted = usage_rollup_advance()
    except Exception as exc:
        step_note(step="usage_rollup", error=f"{type(exc).__name__}: {exc}")
        raise
    step_note(step="usage_rollup")
    return counted


def _queued_key(delivery_id: str) -> str:
    return f"billing:queued:{delivery_id}"


@shared_task(name="billing.deliveries_enqueue_due", ignore_result=True)  # type: ignore[untyped-decorator]
def deliveries_enqueue_due() -> int:
    """Batch new events, reclaim dead leases, enqueue what is due; returns the enqueued count."""
    now = timezone.now()
    _step(events_batch, now)
    _step(deliveries_lease_reclaim, now)
    enqueued = _step(_deliveries_enqueue, now)
    _step(_quarantine_publish, now)
    return enqueued or 0


def _step(run: Callable[..., object], now: datetime) -> int | None:
    """One step of the beat; its failure is logged, noted for the admin, and does not stop the
    steps after it."""
    name = run.__name__.strip("_")
    try:
        result = run(now=now)
    except Exception as exc:
        logger.exception("billing beat step %s failed", name)
        step_note(step=name, error=f"{type(exc).__name__}: {exc}")
        return None
    step_note(step=name)
    return result if isinstance(result, int) else None


class NotEnqueued(Exception):
    """Some due deliveries could not be handed to the broker on this beat."""


def _deliveries_enqueue(*, now: datetime) -> int:
    enqueued, failed, first_error = 0, 0, ""
    for delivery_id in deliveries_due(now=now):
        try:
            if delivery_enqueue(delivery_id):
                enqueued += 1
        except Exception as exc:
            failed += 1
            if failed == 1:  # the broker or cache is down: one traceback per beat is enough
                logger.exception("webhook delivery %s not enqueued", delivery_id)
                first_error = f"{type(exc).__name__}: {exc}"
    if failed:
        raise NotEnqueued(
            f"{failed} due webhook deliveries not enqueued ({enqueued} were): {first_error}"
        )
    return enqueued


def delivery_enqueue(delivery_id: str) -> bool:
    """Hand one due delivery to the workers unless it is already queued; whether it was."""
    if not cache.add(_queued_key(delivery_id), 1, timeout=int(lease_seconds())):
        return False
    try:
        delivery_attempt.delay(delivery_id)
    except Exception:
        with contextlib.suppress(Exception):
            cache.delete(_queued_key(delivery_id))  # so the next beat tries it again
        raise
    return True


def _quarantine_publish(*, now: datetime) -> None:
    """The quarantine gauges, where /metrics on every node reads them."""
    counts = quarantine_counts()
    get_redis_connection("default").hset(
        BILLING_METRICS_KEY,
        mapping={
            QUARANTINED_EVENTS_METRIC: counts["events"],
            QUARANTINED_DELIVERIES_METRIC: counts["deliveries"],
        },
    )


@shared_task(  # type: ignore[untyped-decorator]
    name="billing.delivery_attempt", ignore_result=True, acks_late=True, reject_on_worker_lost=True
)
def delivery_attempt(delivery_id: str) -> None:
    """One attempt of one delivery (a no-op when another worker holds it or it is not due)."""
    try:
        delivery_attempt_run(delivery_id=delivery_id)
    finally:
        cache.delete(_queued_key(delivery_id))
