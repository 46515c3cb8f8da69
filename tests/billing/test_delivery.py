"""Deliveries: signed, verified by public libraries, retried on schedule, same bytes and id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
import redis.asyncio
from django.conf import settings
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from billing.models import (
    DeliveryAttempt,
    DeliveryStatus,
    UsageEvent,
    WebhookDelivery,
    WebhookEndpoint,
)
from billing.schedule import RETRY_STEPS
from billing.selectors import deliveries_due, delivery_metrics
from billing.services.attempts import delivery_attempt_run
from billing.services.batching import events_batch
from routing.metrics import metrics_gather
from tests.billing.conftest import SECRET, NoJitter, batched_delivery, one_event_batched
from tests.billing.scripted_server import Reply, ScriptedServer
from tests.fakes.webhook_receiver import WebhookReceiverThread
from tests.metrics_read import sample_sum


def test_a_delivery_verifies_with_standardwebhooks_and_svix(
    make_event: Callable[..., UsageEvent],
    endpoint: WebhookEndpoint,
    receiver: WebhookReceiverThread,
) -> None:
    svix = pytest.importorskip("svix.webhooks")
    event = make_event()
    now = timezone.now() + timedelta(seconds=10)
    delivery = batched_delivery(now)

    delivery_attempt_run(delivery_id=delivery.id, now=now)

    [got] = receiver.receiver.deliveries
    headers = {
        "webhook-id": got.webhook_id,
        "webhook-timestamp": got.timestamp,
        "webhook-signature": got.signature,
    }
    assert got.verified and got.status == 200
    assert got.webhook_id == delivery.id
    assert got.body == bytes(delivery.body)
    assert (
        Webhook(SECRET).verify(got.body, headers)["data"]["events"][0]["idempotencyKey"]
        == event.idempotency_key
    )
    svix.Webhook(SECRET).verify(got.body, headers)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 1


def test_500_then_200_sends_the_same_bytes_and_webhook_id_twice(
    make_event: Callable[..., UsageEvent],
    endpoint: WebhookEndpoint,
    receiver: WebhookReceiverThread,
) -> None:
    delivery, now = one_event_batched(make_event)
    receiver.receiver.fail_next(1, 500)

    first = delivery_attempt_run(delivery_id=delivery.id, now=now, rng=NoJitter())
    early = delivery_attempt_run(delivery_id=delivery.id, now=now + timedelta(seconds=4))
    second = delivery_attempt_run(delivery_id=delivery.id, now=now + timedelta(seconds=5))

    assert (first.status_code, early, second.status_code) == (500, None, 200)  # type: ignore[union-attr]
    sent = receiver.receiver.deliveries
    assert [d.webhook_id for d in sent] == [delivery.id, delivery.id]
    assert sent[0].body == sent[1].body == bytes(delivery.body)
    assert all(d.verified for d in sent)


def _drive(
    *,
    start: datetime,
    until: datetime,
    outage_end: datetime,
    receiver: WebhookReceiverThread,
    new_events: dict[datetime, Callable[[], UsageEvent]],
) -> None:
    """Run the pipeline on a simulated clock: batch, attempt what is due, jump ahead."""
    now = start
    while now <= until:
        for at in [t for t in new_events if t <= now]:
            new_events.pop(at)()
        events_batch(now=now)
        for delivery_id in deliveries_due(now=now):
            if now < outage_end:
                receiver.receiver.fail_next(1, 503)
            delivery_attempt_run(delivery_id=delivery_id, now=now, rng=NoJitter())
        upcoming = [
            d
            for d in WebhookDelivery.objects.filter(status="pending").values_list(
                "next_attempt_at", flat=True
            )
        ]
        candidates = [t for t in [*upcoming, *new_events] if t and t > now]
        if not candidates:
            return
        now = min(candidates)


def test_a_receiver_down_for_three_days_gets_every_event_afterwards_on_the_published_schedule(
    make_event: Callable[..., UsageEvent],
    endpoint: WebhookEndpoint,
    receiver: WebhookReceiverThread,
) -> None:
    start = timezone.now() + timedelta(seconds=10)
    outage_end = start + timedelta(days=3)
    made: list[UsageEvent] = []

    def make_one() -> UsageEvent:
        made.append(make_event())
        return made[-1]

    new_events = {start + timedelta(hours=h): make_one for h in (0, 20, 50, 71)}

    _drive(
        start=start,
        until=start + timedelta(days=5),
        outage_end=outage_end,
        receiver=receiver,
        new_events=new_events,
    )

    assert set(receiver.receiver.events()) == {e.idempotency_key for e in made}
    first = WebhookDelivery.objects.order_by("created_at").first()
    assert first is not None and first.status == DeliveryStatus.DELIVERED
    times = list(
        DeliveryAttempt.objects.filter(delivery=first).values_list("started_at", flat=True)
    )
    expected, total = [0.0], 0.0
    for step in RETRY_STEPS:
        total += step
        expected.append(total)
    assert [(t - times[0]).total_seconds() for t in times] == expected
    assert all(d.status == DeliveryStatus.DELIVERED for d in WebhookDelivery.objects.all())


def test_410_disables_the_endpoint_and_parks_its_deliveries(
    make_event: Callable[..., UsageEvent],
    endpoint: WebhookEndpoint,
    receiver: WebhookReceiverThread,
) -> None:
    delivery, now = one_event_batched(make_event)
    receiver.receiver.fail_next(1, 410)

    delivery_attempt_run(delivery_id=delivery.id, now=now)
    make_event()
    events_batch(now=now + timedelta(seconds=10))

    endpoint.refresh_from_db()
    delivery.refresh_from_db()
    assert endpoint.enabled is False and "410" in endpoint.disabled_reason
    assert delivery.status == DeliveryStatus.DISABLED
    assert WebhookDelivery.objects.count() == 1
    assert delivery_attempt_run(delivery_id=delivery.id, now=now + timedelta(days=1)) is None


def test_redirects_are_not_followed(
    workspace: object, make_event: Callable[..., UsageEvent], receiver: WebhookReceiverThread
) -> None:
    from tests.billing.conftest import endpoint_add

    with ScriptedServer(Reply(307, {"location": receiver.url})) as server:
        endpoint_add(workspace=workspace, url=server.url)  # type: ignore[arg-type]
        delivery, now = one_event_batched(make_event)

        attempt = delivery_attempt_run(delivery_id=delivery.id, now=now)

    assert attempt is not None and attempt.status_code == 307
    assert receiver.receiver.deliveries == []
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.next_attempt_at is not None and delivery.next_attempt_at > now


def test_retry_after_is_honoured_within_the_step_bounds(
    workspace: object, make_event: Callable[..., UsageEvent]
) -> None:
    from tests.billing.conftest import endpoint_add

    with ScriptedServer(
        Reply(503, {"retry-after": "8"}), Reply(429, {"retry-after": "3600"})
    ) as server:
        endpoint_add(workspace=workspace, url=server.url)  # type: ignore[arg-type]
        delivery, now = one_event_batched(make_event)

        delivery_attempt_run(delivery_id=delivery.id, now=now)
        delivery.refresh_from_db()
        assert delivery.next_attempt_at is not None
        first_wait = delivery.next_attempt_at - now
        delivery_attempt_run(delivery_id=delivery.id, now=delivery.next_attempt_at)
        second_at = delivery.next_attempt_at
        delivery.refresh_from_db()

    assert delivery.next_attempt_at is not None
    assert first_wait == timedelta(seconds=8)
    assert delivery.next_attempt_at - second_at == timedelta(seconds=600)


def test_the_stored_response_body_is_truncated_to_2_kib(
    workspace: object, make_event: Callable[..., UsageEvent]
) -> None:
    from tests.billing.conftest import endpoint_add

    with ScriptedServer(Reply(500, body=b"x" * 100_000)) as server:
        endpoint_add(workspace=workspace, url=server.url)  # type: ignore[arg-type]
        delivery, now = one_event_batched(make_event)

        attempt = delivery_attempt_run(delivery_id=delivery.id, now=now)

    assert attempt is not None and attempt.status_code == 500
    assert attempt.response_body == "x" * 2048


def test_a_connection_error_is_a_recorded_failed_attempt(
    workspace: object, make_event: Callable[..., UsageEvent]
) -> None:
    from tests.billing.conftest import endpoint_add

    with ScriptedServer(Reply(200)) as server:
        url = server.url
    endpoint_add(workspace=workspace, url=url)  # type: ignore[arg-type]
    delivery, now = one_event_batched(make_event)

    attempt = delivery_attempt_run(delivery_id=delivery.id, now=now)

    assert attempt is not None and attempt.status_code is None and "ConnectError" in attempt.error
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING


def test_proxy_environment_variables_are_ignored(
    monkeypatch: pytest.MonkeyPatch,
    make_event: Callable[..., UsageEvent],
    endpoint: WebhookEndpoint,
    receiver: WebhookReceiverThread,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    delivery, now = one_event_batched(make_event)

    attempt = delivery_attempt_run(delivery_id=delivery.id, now=now)

    assert attempt is not None and attempt.status_code == 200


def test_after_the_last_step_the_delivery_is_failed(
    make_event: Callable[..., UsageEvent],
    endpoint: WebhookEndpoint,
    receiver: WebhookReceiverThread,
) -> None:
    delivery, now = one_event_batched(make_event)
    receiver.receiver.fail_next(10, 500)

    for _ in range(10):
        delivery_attempt_run(delivery_id=delivery.id, now=now)
        delivery.refresh_from_db()
        now = delivery.next_attempt_at or now

    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == 10
    assert delivery.next_attempt_at is None
    assert json.loads(receiver.receiver.deliveries[-1].body) == json.loads(bytes(delivery.body))


def _failed_once_then_delivered(
    make_event: Callable[..., UsageEvent], receiver: WebhookReceiverThread
) -> None:
    """One event's delivery: a 500 from the receiver, then its retry 10 s later succeeds."""
    delivery, now = one_event_batched(make_event)
    receiver.receiver.fail_next(1, 500)
    delivery_attempt_run(delivery_id=delivery.id, now=now)
    delivery_attempt_run(delivery_id=delivery.id, now=now + timedelta(seconds=10))


def test_delivery_metrics_count_outcomes_from_the_database(
    make_event: Callable[..., UsageEvent],
    endpoint: WebhookEndpoint,
    receiver: WebhookReceiverThread,
) -> None:
    _failed_once_then_delivered(make_event, receiver)
    make_event()

    metrics = delivery_metrics()

    assert metrics["deliveries_delivered"] == 1 and metrics["deliveries_pending"] == 0
    assert (metrics["attempts_succeeded"], metrics["attempts_failed"]) == (1, 1)
    assert metrics["events_unbatched"] == 1


def _delivery_attempts_scraped() -> dict[str, float]:
    async def gather() -> bytes:
        client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        try:
            return await metrics_gather(client)
        finally:
            await client.aclose()

    text = asyncio.run(gather()).decode()
    return {
        outcome: sample_sum(text, "gateway_webhook_deliveries_total", outcome=outcome)
        for outcome in ("succeeded", "failed")
    }


def test_delivery_attempts_are_counted_by_outcome_on_every_node_s_metrics(
    make_event: Callable[..., UsageEvent],
    endpoint: WebhookEndpoint,
    receiver: WebhookReceiverThread,
) -> None:
    before = _delivery_attempts_scraped()

    _failed_once_then_delivered(make_event, receiver)

    after = _delivery_attempts_scraped()
    assert after["failed"] - before["failed"] == 1
    assert after["succeeded"] - before["succeeded"] == 1
