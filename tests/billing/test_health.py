"""Billing health that cannot lie: heartbeats, beat steps that fail for real, the banner on every
admin page, the per-workspace health page, and "Resend" saying what actually happened."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from billing.liveness import BEAT, WORKER, heartbeat_note
from billing.models import UsageEvent, WebhookDelivery, WebhookEndpoint
from billing.services.attempts import delivery_attempt_run
from billing.tasks import deliveries_enqueue_due, heartbeat
from gateway_project.celery import app
from tests.billing.conftest import one_event_batched
from tests.fakes.webhook_receiver import WebhookReceiverThread

PAGES = (
    "/admin/",
    "/admin/keys/apikey/",
    "/admin/billing/webhookdelivery/",
    "/admin/groups/group/",
)
DEAD_BROKER = "redis://127.0.0.1:1/0"


def _banner(client: Client, url: str) -> str:
    """The text of the billing banner on `url`, or "" when the page has none."""
    page = client.get(url).content.decode()
    found = re.search(r'<div class="billing-banner".*?</div>', page, re.S)
    return re.sub(r"<[^>]+>", " ", found.group(0)) if found else ""


def _alive() -> None:
    """Beat published the heartbeat and a worker ran it (the worker side through Celery)."""
    heartbeat_note(role=BEAT)
    heartbeat.apply()


def _pools_reset() -> None:
    # Dropped, not closed: kombu keeps one pool per broker URL and hands the same one back.
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def broker_down() -> Iterator[None]:
    """Celery's broker is a port where nothing listens (as when Redis for Celery is down)."""
    previous = app.conf.broker_url
    _pools_reset()
    app.conf.broker_url = DEAD_BROKER
    yield
    _pools_reset()
    app.conf.broker_url = previous


def test_a_healthy_pipeline_shows_no_banner(
    admin_client: Client, make_event: Callable[..., UsageEvent], endpoint: WebhookEndpoint
) -> None:
    make_event()
    _alive()

    deliveries_enqueue_due.apply()

    assert all(_banner(admin_client, url) == "" for url in PAGES)


def test_the_banner_shows_on_every_admin_page_while_batching_crashes_on_each_beat(
    admin_client: Client,
    make_event: Callable[..., UsageEvent],
    endpoint: WebhookEndpoint,
    settings: Any,
) -> None:
    _alive()
    make_event()
    settings.GATEWAY_WEBHOOK_BATCH_SIZE = 0  # a broken deploy: every beat's batching raises

    deliveries_enqueue_due.apply()
    stalled = [_banner(admin_client, url) for url in PAGES]
    settings.GATEWAY_WEBHOOK_BATCH_SIZE = 100
    settings.GATEWAY_WEBHOOK_FLUSH_SECONDS = 0
    deliveries_enqueue_due.apply()
    recovered = _banner(admin_client, "/admin/")

    for text in stalled:
        assert "Billing needs attention" in text
        assert "batching usage events into deliveries" in text
        assert "ZeroDivisionError" in text
    assert recovered == ""
    assert WebhookDelivery.objects.count() == 1


def test_the_banner_shows_when_due_deliveries_cannot_be_enqueued(
    admin_client: Client,
    make_event: Callable[..., UsageEvent],
    endpoint: WebhookEndpoint,
    broker_down: None,
    settings: Any,
) -> None:
    settings.GATEWAY_WEBHOOK_FLUSH_SECONDS = 0
    heartbeat_note(role=BEAT)
    heartbeat_note(role=WORKER)
    make_event()

    deliveries_enqueue_due.apply()

    text = _banner(admin_client, "/admin/billing/webhookdelivery/")
    assert "enqueueing due deliveries" in text
    assert "1 due webhook deliveries not enqueued" in text
    assert WebhookDelivery.objects.get().status == "pending"


def test_stale_or_missing_heartbeats_are_red(admin_client: Client) -> None:
    heartbeat_note(role=BEAT, at=time.time() - 125)

    text = _banner(admin_client, "/admin/")

    assert "Celery beat heartbeat: 2 min 0" in text
    assert "Celery worker heartbeat: never" in text


def test_a_quarantined_event_shows_in_the_banner_with_a_link(
    admin_client: Client, make_event: Callable[..., UsageEvent]
) -> None:
    _alive()
    make_event(quarantined_at=timezone.now(), quarantine_error="ValueError: bad metadata")

    page = admin_client.get("/admin/").content.decode()

    assert "Quarantined usage events" in page
    assert "/admin/billing/usageevent/?quarantine=quarantined" in page


def test_the_health_page_gives_each_figure_a_level(
    admin_client: Client,
    make_event: Callable[..., UsageEvent],
    endpoint: WebhookEndpoint,
    receiver: WebhookReceiverThread,
    settings: Any,
) -> None:
    settings.GATEWAY_BILLING_PENDING_WARN_SECONDS = 60
    delivery, now = one_event_batched(make_event)
    receiver.receiver.fail_next(1, 503)
    delivery_attempt_run(delivery_id=delivery.id, now=now)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        created_at=timezone.now() - timedelta(minutes=3)
    )

    page = admin_client.get("/admin/billing-health/").content.decode()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))

    assert "Oldest pending delivery WARN waiting 3 min" in text
    assert "Retries in flight WARN 1" in text
    assert "Last delivery error WARN HTTP 503" in text
    assert "Last successful delivery OK never" in text
    assert "Celery worker heartbeat RED never" in text


def test_resend_says_the_worker_is_down_instead_of_queued(
    admin_client: Client,
    make_event: Callable[..., UsageEvent],
    endpoint: WebhookEndpoint,
) -> None:
    delivery, _ = one_event_batched(make_event)
    heartbeat_note(role=WORKER, at=time.time() - 600)

    response = admin_client.post(
        "/admin/billing/webhookdelivery/",
        {"action": "resend", "_selected_action": [delivery.pk]},
        follow=True,
    )

    page = response.content.decode()
    assert "NOT sent: no Celery worker has run a task for 10 min" in page
    assert "Queued" not in page


def test_resend_reports_the_attempt_a_live_worker_made(
    admin_client: Client,
    eager: None,
    make_event: Callable[..., UsageEvent],
    endpoint: WebhookEndpoint,
    receiver: WebhookReceiverThread,
) -> None:
    delivery, _ = one_event_batched(make_event)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status="failed", attempts=10)
    receiver.receiver.fail_next(1, 500)

    failed = admin_client.post(
        "/admin/billing/webhookdelivery/",
        {"action": "resend", "_selected_action": [delivery.pk]},
        follow=True,
    ).content.decode()
    delivered = admin_client.post(
        "/admin/billing/webhookdelivery/",
        {"action": "resend", "_selected_action": [delivery.pk]},
        follow=True,
    ).content.decode()

    assert "attempt 11 failed (HTTP 500" in failed and "now failed" in failed
    assert "delivered on attempt 12 (HTTP 200)" in delivered
    assert WebhookDelivery.objects.get().status == "delivered"
