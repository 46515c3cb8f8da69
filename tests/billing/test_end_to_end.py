"""End to end: N inference requests -> N usage events -> the receiver gets exactly those N
(deduplicated by idempotencyKey) and the events API returns the same N."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from billing.models import UsageEvent
from billing.services.ingest import usage_ingest
from billing.tasks import deliveries_enqueue_due
from tests.billing.conftest import endpoint_add, events_listed
from tests.fakes.webhook_receiver import WebhookReceiverThread
from tests.proxy.conftest import GatewayThread, Tenant
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
N = 12


def test_n_requests_reach_the_receiver_and_the_events_api_exactly_once(
    eager: None,
    flush_now: None,
    gateway: GatewayThread,
    tenant: Tenant,
    receiver: WebhookReceiverThread,
) -> None:
    started = timezone.now() - timedelta(seconds=1)
    endpoint_add(workspace=tenant.workspace, url=receiver.url)
    headers = {"Authorization": f"Bearer {tenant.key}"}
    body = {"model": "acme/llama", "messages": [{"role": "user", "content": "hi"}]}
    statuses = [
        httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers).status_code
        for _ in range(N)
    ]

    wait_until(lambda: usage_ingest() is not None and UsageEvent.objects.count() == N, timeout=10)
    deliveries_enqueue_due()
    listed = events_listed(gateway_url=gateway.url, workspace=tenant.workspace, since=started)

    assert statuses == [200] * N
    stored = set(UsageEvent.objects.values_list("idempotency_key", flat=True))
    assert len(stored) == N
    assert set(receiver.receiver.events()) == stored
    assert all(d.verified for d in receiver.receiver.deliveries)
    assert {e["idempotencyKey"] for e in listed.json()["items"]} == stored
