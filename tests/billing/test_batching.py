"""Usage events become frozen batches: <= 100 events, one delivery per enabled endpoint, once."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

from django.utils import timezone

from billing.models import UsageEvent, WebhookDelivery, WebhookEndpoint
from billing.services.batching import events_batch
from groups.models import Workspace
from tests.billing.conftest import endpoint_add


def _later(seconds: float = 10) -> datetime:
    return timezone.now() + timedelta(seconds=seconds)


def _keys(delivery: WebhookDelivery) -> list[str]:
    return [e["idempotencyKey"] for e in json.loads(bytes(delivery.body))["data"]["events"]]


def test_events_are_batched_by_at_most_100_and_each_lands_once(
    make_event: Callable[..., UsageEvent], endpoint: WebhookEndpoint
) -> None:
    events = [make_event() for _ in range(250)]

    events_batch(now=_later())

    deliveries = list(WebhookDelivery.objects.filter(endpoint=endpoint))
    assert sorted(d.event_count for d in deliveries) == [50, 100, 100]
    counted = Counter(key for d in deliveries for key in _keys(d))
    assert set(counted) == {e.idempotency_key for e in events}
    assert set(counted.values()) == {1}
    assert not UsageEvent.objects.filter(batched_at__isnull=True).exists()


def test_a_second_run_batches_nothing_again(
    make_event: Callable[..., UsageEvent], endpoint: WebhookEndpoint
) -> None:
    make_event()
    events_batch(now=_later())

    created = events_batch(now=_later(20))

    assert created == []
    assert WebhookDelivery.objects.count() == 1


def test_every_enabled_endpoint_gets_the_same_events_under_its_own_webhook_id(
    workspace: Workspace, make_event: Callable[..., UsageEvent], endpoint: WebhookEndpoint
) -> None:
    second = endpoint_add(workspace=workspace, url="http://127.0.0.1:9/second")
    endpoint_add(workspace=workspace, url="http://127.0.0.1:9/off").__class__.objects.filter(
        url__endswith="/off"
    ).update(enabled=False)
    make_event()

    events_batch(now=_later())

    first_delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    second_delivery = WebhookDelivery.objects.get(endpoint=second)
    assert bytes(first_delivery.body) == bytes(second_delivery.body)
    assert first_delivery.id != second_delivery.id
    assert WebhookDelivery.objects.count() == 2


def test_events_of_a_workspace_without_endpoint_are_marked_batched_without_delivery(
    make_event: Callable[..., UsageEvent],
) -> None:
    event = make_event()

    events_batch(now=_later())

    event.refresh_from_db()
    assert event.batched_at is not None
    assert WebhookDelivery.objects.count() == 0


def test_a_partial_batch_waits_for_the_flush_interval_but_a_full_one_goes_at_once(
    make_event: Callable[..., UsageEvent], endpoint: WebhookEndpoint
) -> None:
    [make_event() for _ in range(130)]

    events_batch(now=timezone.now())
    sizes_now = [d.event_count for d in WebhookDelivery.objects.all()]
    events_batch(now=_later(5))
    sizes_later = sorted(d.event_count for d in WebhookDelivery.objects.all())

    assert sizes_now == [100]
    assert sizes_later == [30, 100]


def test_the_body_is_the_wire_shape_of_spec_9(
    make_event: Callable[..., UsageEvent], endpoint: WebhookEndpoint
) -> None:
    event = make_event(cached_input_tokens=7, status="cancelled")

    events_batch(now=_later())

    body = json.loads(bytes(WebhookDelivery.objects.get().body))
    assert body["type"] == "API_BILLING_USAGE"
    assert body["data"]["events"] == [
        {
            "idempotencyKey": event.idempotency_key,
            "timestamp": event.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "requestId": event.request_id,
            "requestMetadata": {"trace": "t-1"},
            "modelSlug": "acme/llama",
            "externalCustomerId": "cust_42",
            "externalEntityId": "cust_42",
            "apiKeyPrefix": "sky_abc123",
            "groupId": event.group_id,
            "status": "cancelled",
            "tokens": {"inputTokens": 100, "outputTokens": 200, "cachedInputTokens": 7},
        }
    ]


def test_events_are_ordered_by_timestamp_inside_a_batch(
    make_event: Callable[..., UsageEvent], endpoint: WebhookEndpoint
) -> None:
    base = timezone.now()
    late = make_event(timestamp=base)
    early = make_event(timestamp=base - timedelta(seconds=30))

    events_batch(now=_later())

    assert _keys(WebhookDelivery.objects.get()) == [early.idempotency_key, late.idempotency_key]
