"""Claims: one attempt per due slot, however many workers race; dead workers' leases come back."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection, connections

from billing.models import DeliveryAttempt, UsageEvent, WebhookEndpoint
from billing.selectors import deliveries_due
from billing.services.attempts import (
    deliveries_lease_reclaim,
    delivery_attempt_run,
    delivery_claim,
    lease_seconds,
)
from tests.billing.conftest import one_event_batched
from tests.fakes.webhook_receiver import WebhookReceiverThread


def test_two_claims_of_one_delivery_make_one_attempt(
    make_event: Callable[..., UsageEvent],
    endpoint: WebhookEndpoint,
    receiver: WebhookReceiverThread,
) -> None:
    delivery, now = one_event_batched(make_event)

    first = delivery_attempt_run(delivery_id=delivery.id, now=now)
    second = delivery_attempt_run(delivery_id=delivery.id, now=now)

    assert first is not None and second is None
    assert len(receiver.receiver.deliveries) == 1


def test_a_claimed_delivery_is_neither_due_nor_claimable_until_its_lease_expires(
    make_event: Callable[..., UsageEvent], endpoint: WebhookEndpoint
) -> None:
    delivery, now = one_event_batched(make_event)

    claimed = delivery_claim(delivery_id=delivery.id, now=now)

    assert claimed is not None and claimed.attempts == 1
    assert deliveries_due(now=now) == []
    assert (
        delivery_claim(delivery_id=delivery.id, now=now + timedelta(seconds=lease_seconds() - 1))
        is None
    )


def test_a_worker_lost_mid_attempt_is_resent_with_the_same_id_and_bytes_after_the_lease(
    make_event: Callable[..., UsageEvent],
    endpoint: WebhookEndpoint,
    receiver: WebhookReceiverThread,
) -> None:
    delivery, now = one_event_batched(make_event)
    delivery_claim(delivery_id=delivery.id, now=now)  # the worker holding this claim dies
    later = now + timedelta(seconds=lease_seconds() + 1)

    reclaimed = deliveries_lease_reclaim(now=later)
    due = deliveries_due(now=later)
    delivery_attempt_run(delivery_id=delivery.id, now=later)

    assert reclaimed == 1 and due == [delivery.id]
    [got] = receiver.receiver.deliveries
    assert got.webhook_id == delivery.id and got.body == bytes(delivery.body) and got.verified
    delivery.refresh_from_db()
    assert delivery.status == "delivered"


@pytest.mark.django_db(transaction=True)
def test_racing_workers_make_exactly_one_http_attempt(
    make_event: Callable[..., UsageEvent],
    endpoint: WebhookEndpoint,
    receiver: WebhookReceiverThread,
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks with skip_locked need PostgreSQL; SQLite serializes writers")
    delivery, now = one_event_batched(make_event)
    barrier = threading.Barrier(8)
    results: list[object] = []

    def work() -> None:
        try:
            barrier.wait(10)
            results.append(delivery_attempt_run(delivery_id=delivery.id, now=now))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(results) == 8
    assert len([r for r in results if r is not None]) == 1
    assert len(receiver.receiver.deliveries) == 1
    assert DeliveryAttempt.objects.filter(delivery_id=delivery.id).count() == 1
