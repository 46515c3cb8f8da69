"""Celery tasks of the webhook pipeline. The schedule lives in the database, never in countdowns.

`deliveries_enqueue_due` (beat, every second) freezes due usage events into deliveries, releases
expired leases and enqueues due deliveries; `delivery_attempt` makes one attempt. A Redis marker per
queued delivery keeps a backlog from being enqueued again on every beat.
"""

from __future__ import annotations

from celery import shared_task
from django.core.cache import cache
from django.utils import timezone

from billing.attempts import deliveries_lease_reclaim, delivery_attempt_run, lease_seconds
from billing.batching import events_batch
from billing.selectors import deliveries_due


def _queued_key(delivery_id: str) -> str:
    return f"billing:queued:{delivery_id}"


@shared_task(name="billing.deliveries_enqueue_due", ignore_result=True)  # type: ignore[untyped-decorator]
def deliveries_enqueue_due() -> int:
    """Batch new events, reclaim dead leases, enqueue what is due; returns the enqueued count."""
    now = timezone.now()
    events_batch(now=now)
    deliveries_lease_reclaim(now=now)
    enqueued = 0
    for delivery_id in deliveries_due(now=now):
        if cache.add(_queued_key(delivery_id), 1, timeout=int(lease_seconds())):
            delivery_attempt.delay(delivery_id)
            enqueued += 1
    return enqueued


@shared_task(  # type: ignore[untyped-decorator]
    name="billing.delivery_attempt", ignore_result=True, acks_late=True, reject_on_worker_lost=True
)
def delivery_attempt(delivery_id: str) -> None:
    """One attempt of one delivery (a no-op when another worker holds it or it is not due)."""
    try:
        delivery_attempt_run(delivery_id=delivery_id)
    finally:
        cache.delete(_queued_key(delivery_id))
