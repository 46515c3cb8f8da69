"""Billing health against real Celery processes: beat and worker heartbeats are written by the
processes themselves, a killed worker turns red while beat stays green, and Resend reports the
attempt a live worker made."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from billing.health import RED, pipeline_findings
from billing.liveness import notes_read
from billing.models import WebhookDelivery
from groups.models import Workspace
from tests.billing.conftest import endpoint_add
from tests.fakes.webhook_receiver import WebhookReceiverThread
from tests.faults.processes import Celery
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _levels() -> dict[str, str]:
    return {finding.label: finding.level for finding in pipeline_findings()}


def test_heartbeats_come_from_the_processes_and_a_killed_worker_turns_red(
    celery: Callable[..., Celery], settings: Any
) -> None:
    # Three beat periods (5 s each): a loaded machine may delay one publish, never three.
    settings.GATEWAY_BILLING_HEARTBEAT_STALE_SECONDS = 15
    worker = celery("worker")
    celery("beat")
    wait_until(lambda: {"beat", "worker"} <= set(notes_read().heartbeats), timeout=60, interval=0.1)
    wait_until(lambda: "deliveries_enqueue" in notes_read().steps, timeout=30, interval=0.1)
    alive = _levels()

    worker.kill()
    wait_until(lambda: _levels()["Celery worker heartbeat"] == RED, timeout=45, interval=0.1)
    after = _levels()

    assert alive["Celery beat heartbeat"] == alive["Celery worker heartbeat"] == "ok"
    assert alive["Step: enqueueing due deliveries"] == "ok"
    assert after["Celery beat heartbeat"] == "ok"


def test_resend_reports_the_attempt_of_a_live_worker(
    celery: Callable[..., Celery],
    admin_client: Client,
    workspace: Workspace,
) -> None:
    with WebhookReceiverThread() as receiver:
        endpoint = endpoint_add(workspace=workspace, url=receiver.url)
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint,
            body=b'{"type": "API_BILLING_USAGE", "data": {"events": []}}',
            event_count=0,
            status="failed",
            attempts=10,
            last_status_code=500,
        )
        celery("worker")
        wait_until(lambda: "worker" in notes_read().heartbeats, timeout=60, interval=0.1)

        page = admin_client.post(
            "/admin/billing/webhookdelivery/",
            {"action": "resend", "_selected_action": [delivery.pk]},
            follow=True,
        ).content.decode()

    assert "delivered on attempt 11 (HTTP 200)" in page
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == "delivered"
