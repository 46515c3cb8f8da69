"""The Celery face: the beat task batches, enqueues due deliveries once, and they get delivered."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.conf import settings

from billing.models import UsageEvent, WebhookDelivery, WebhookEndpoint
from billing.webhook_tasks import deliveries_enqueue_due
from gateway_project.celery import app
from tests.fakes.webhook_receiver import WebhookReceiverThread


@pytest.fixture
def eager() -> Iterator[None]:
    """Run `.delay()` inline, as a worker would, for the duration of a test."""
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


def test_the_beat_task_delivers_new_events_end_to_end(
    eager: None,
    make_event: Callable[..., UsageEvent],
    endpoint: WebhookEndpoint,
    receiver: WebhookReceiverThread,
    settings: object,
) -> None:
    settings.GATEWAY_WEBHOOK_FLUSH_SECONDS = 0  # type: ignore[attr-defined]
    events = [make_event() for _ in range(3)]

    enqueued = deliveries_enqueue_due()

    assert enqueued == 1
    assert set(receiver.receiver.events()) == {e.idempotency_key for e in events}
    assert WebhookDelivery.objects.get().status == "delivered"


def test_a_queued_delivery_is_enqueued_once_however_many_beats_pass(
    make_event: Callable[..., UsageEvent], endpoint: WebhookEndpoint, settings: object
) -> None:
    import redis

    settings.GATEWAY_WEBHOOK_FLUSH_SECONDS = 0  # type: ignore[attr-defined]
    make_event()
    broker = redis.Redis.from_url(settings.REDIS_URL)  # type: ignore[attr-defined]

    beats = [deliveries_enqueue_due() for _ in range(3)]

    assert beats == [1, 0, 0]
    assert broker.llen("celery") == 1


def test_celery_is_configured_for_at_least_once() -> None:
    assert settings.CELERY_TASK_ACKS_LATE is True
    assert settings.CELERY_TASK_REJECT_ON_WORKER_LOST is True
    assert settings.CELERY_WORKER_PREFETCH_MULTIPLIER == 1
    assert (
        settings.CELERY_TASK_TIME_LIMIT
        < settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    )
    assert settings.CELERY_BEAT_SCHEDULE["webhook-deliveries"]["schedule"] <= 5
    assert "billing.webhook_tasks" in settings.CELERY_IMPORTS
