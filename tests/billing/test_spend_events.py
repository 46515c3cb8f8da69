"""A priced endpoint's events carry their exact cost, in webhooks and the events API; an unpriced
endpoint's carry none."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from django.utils import timezone

from billing.models import UsageEvent
from billing.services.ingest import usage_ingest
from billing.tasks import deliveries_enqueue_due
from billing.wire import event_wire
from gateway_project.kernel.money import amount_text
from groups.services.audit import SYSTEM_ACTOR
from routing.services import endpoint_update
from tests.billing.conftest import endpoint_add, events_listed
from tests.fakes.webhook_receiver import WebhookReceiverThread
from tests.proxy.conftest import GatewayThread, Tenant
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
PRICING = {
    "currency": "USD",
    "input_per_million": "0.50",
    "output_per_million": "1.50",
    "cached_input_per_million": "0.25",
}
# (prompt, cached, completion) -> exact USD at 0.50 / 0.25 / 1.50 per million
KNOWN = [
    ((100, 0, 50), "0.00012500"),  # 100 x 0.5 + 50 x 1.5 = 125 micro-USD
    ((1000, 600, 10), "0.00036500"),  # 400 x 0.5 + 600 x 0.25 + 10 x 1.5 = 365
    ((1, 1, 1), "0.00000175"),  # 0.25 + 1.5 = 1.75 micro-USD
]


def _answer(prompt: int, cached: int, completion: int) -> dict[str, Any]:
    """What the fake upstream answers: a completion reporting exactly this usage."""
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    message = {"role": "assistant", "content": "ok"}
    body = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage}
    return {"status": 200, "body": json.dumps(body)}


def _price(tenant: Tenant, pricing: dict[str, str]) -> None:
    """Price the tenant's endpoint (requests admitted from now on are charged at `pricing`)."""
    endpoint_update(
        workspace=tenant.workspace,
        endpoint_id=tenant.endpoint.id,
        actor=SYSTEM_ACTOR,
        pricing=pricing,
    )


def _call(gateway: GatewayThread, key: str, usage: tuple[int, int, int]) -> int:
    body = {
        "model": "acme/llama",
        "messages": [{"role": "user", "content": "hi"}],
        "fake": _answer(*usage),
    }
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers).status_code


def test_three_requests_of_known_usage_carry_their_exact_cost_everywhere(
    eager: None,
    flush_now: None,
    gateway: GatewayThread,
    tenant: Tenant,
    receiver: WebhookReceiverThread,
) -> None:
    started = timezone.now() - timedelta(seconds=1)
    _price(tenant, PRICING)
    endpoint_add(workspace=tenant.workspace, url=receiver.url)

    statuses = [_call(gateway, tenant.key, usage) for usage, _ in KNOWN]

    wait_until(lambda: usage_ingest() is not None and UsageEvent.objects.count() == 3, timeout=10)
    deliveries_enqueue_due()
    listed = events_listed(gateway_url=gateway.url, workspace=tenant.workspace, since=started)
    items = listed.json()["items"]

    assert statuses == [200, 200, 200]
    expected = [{"currency": "USD", "amount": amount} for _, amount in KNOWN]
    stored = UsageEvent.objects.order_by("timestamp", "created_at")
    assert [(e.cost_currency, e.cost_amount) for e in stored] == [
        ("USD", Decimal(amount)) for _, amount in KNOWN
    ]
    assert [e["cost"] for e in sorted(items, key=lambda e: e["timestamp"])] == expected
    webhooks = sorted(receiver.receiver.events().values(), key=lambda e: e["timestamp"])
    assert [e["cost"] for e in webhooks] == expected


def test_an_unpriced_endpoint_s_events_carry_no_cost(
    gateway: GatewayThread, tenant: Tenant
) -> None:
    status = _call(gateway, tenant.key, (10, 0, 5))

    wait_until(lambda: usage_ingest() is not None and UsageEvent.objects.count() == 1, timeout=10)

    event = UsageEvent.objects.get()
    assert status == 200
    assert event.cost_currency == "" and event.cost_amount is None
    assert "cost" not in event_wire(event)


def test_a_price_change_applies_to_requests_admitted_after_it(
    gateway: GatewayThread, tenant: Tenant
) -> None:
    reprice = {"currency": "USD", "input_per_million": "1", "output_per_million": "2"}
    _price(tenant, PRICING)
    first = _call(gateway, tenant.key, (100, 0, 50))
    _price(tenant, reprice)
    wait_until(lambda: _priced_at(gateway, tenant.key) == "0.00020000", timeout=10)

    wait_until(lambda: usage_ingest() is not None and UsageEvent.objects.count() >= 2, timeout=10)

    amounts = [e.cost_amount for e in UsageEvent.objects.order_by("timestamp", "created_at")]
    assert first == 200
    assert amounts[0] == Decimal("0.000125")
    assert set(amounts[1:]) == {Decimal("0.0002")}  # 100 x 1 + 50 x 2 micro-USD


def _priced_at(gateway: GatewayThread, key: str) -> str | None:
    """Send one request and return its event's amount (read back from the usage stream)."""
    before = UsageEvent.objects.count()
    _call(gateway, key, (100, 0, 50))
    wait_until(lambda: usage_ingest() is not None and UsageEvent.objects.count() > before)
    latest = UsageEvent.objects.order_by("-timestamp", "-created_at").first()
    assert latest is not None and latest.cost_amount is not None
    return amount_text(latest.cost_amount)
