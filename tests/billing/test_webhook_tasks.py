"""The Celery face: the beat task batches, enqueues due deliveries once, and they get delivered."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from django.conf import settings

from billing.models import UsageEvent, WebhookDelivery, WebhookEndpoint
from billing.tasks import deliveries_enqueue_due
from tests.fakes.webhook_receiver import WebhookReceiverThread


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


def test_a_worker_finds_every_billing_task_by_the_name_the_beat_sends() -> None:
    script = (
        "from gateway_project.celery import app; app.loader.import_default_modules(); "
        "print(*sorted(app.tasks))"
    )

    found = subprocess.run(
        [sys.executable, "-c", script],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()

    assert {"billing.usage_ingest", "billing.deliveries_enqueue_due"} <= set(found)
    assert "billing.delivery_attempt" in found
