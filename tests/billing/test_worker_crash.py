"""A Celery worker killed with SIGKILL mid-delivery loses nothing (real workers, PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from billing.models import DeliveryStatus, UsageEvent, WebhookDelivery
from billing.tasks import deliveries_enqueue_due
from groups.models import Workspace
from tests.billing.conftest import endpoint_add
from tests.billing.scripted_server import Reply, ScriptedServer
from tests.faults.processes import Celery
from tests.waiting import wait_until

TIMEOUT = 2  # the webhook timeout of the test and its workers: a 13 s lease
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _delivered() -> bool:
    """True once the delivery is delivered; until then, enqueue what is due, as beat would."""
    if WebhookDelivery.objects.get().status == DeliveryStatus.DELIVERED:
        return True
    deliveries_enqueue_due()
    return False


def test_a_worker_killed_mid_delivery_loses_nothing(
    settings: Any,
    workspace: Workspace,
    make_event: Callable[..., UsageEvent],
    celery: Callable[..., Celery],
) -> None:
    settings.GATEWAY_WEBHOOK_TIMEOUT = TIMEOUT
    settings.GATEWAY_WEBHOOK_FLUSH_SECONDS = 0
    hang = threading.Event()
    with ScriptedServer(Reply(200, hold=hang), Reply(200)) as server:
        endpoint_add(workspace=workspace, url=server.url)
        make_event()
        first = celery("worker", GATEWAY_WEBHOOK_TIMEOUT=str(TIMEOUT))
        deliveries_enqueue_due()
        wait_until(lambda: len(server.requests) == 1, timeout=30, interval=0.05)

        first.kill()
        hang.set()
        celery("worker", GATEWAY_WEBHOOK_TIMEOUT=str(TIMEOUT))
        delivery = WebhookDelivery.objects.get()
        wait_until(_delivered, timeout=60, interval=0.05, what="the second worker's delivery")

    ids = [r["headers"]["webhook-id"] for r in server.requests]
    assert ids == [delivery.id, delivery.id]
    assert server.requests[0]["body"] == server.requests[1]["body"] == bytes(delivery.body)
