"""The three questions support gets, answered from the customer page in at most two clicks, in
headless Chromium at 1400x900, against traffic the test sends through the real gateway."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.db.models import F, Sum
from django.utils import timezone

from billing.models import UsageEvent, WebhookDelivery, WebhookEndpoint, WebhookSecret
from billing.services.ingest import usage_ingest
from billing.tasks import deliveries_enqueue_due
from gateway_project.celery import app
from gateway_project.kernel.encryption import encrypt
from groups.models import Workspace
from groups.services.audit import SYSTEM_ACTOR
from keys.services import api_key_create
from routing.activity_read import group_rejections, keys_last_used_pending
from tests.browser.conftest import Shots
from tests.fakes.model_server import FakeModelServerThread
from tests.fakes.webhook_receiver import WebhookReceiverThread
from tests.proxy.conftest import SLUG, GatewayThread, Tenant, compatible_target, tenant_build
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
SECRET = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
VIEWPORT = {"width": 1400, "height": 900}


@pytest.fixture
def support(staff_page: Any) -> Any:
    """The logged-in support engineer's page at 1400x900."""
    staff_page.set_viewport_size(VIEWPORT)
    return staff_page


def _tenant(workspace: Workspace, upstream: FakeModelServerThread, **limits: Any) -> Tenant:
    return tenant_build(
        workspace=workspace,
        targets=[compatible_target(upstream.url)],
        limits=limits or None,
        external_id="initech-billing-7",
    )


def _send(gateway: GatewayThread, key: str, times: int) -> list[int]:
    body = {"model": SLUG, "messages": [{"role": "user", "content": "hello there"}]}
    headers = {"Authorization": f"Bearer {key}"}
    return [
        httpx.post(f"{gateway.url}{CHAT}", json=body, headers=headers, timeout=10).status_code
        for _ in range(times)
    ]


def _events_stored(count: int) -> None:
    wait_until(
        lambda: usage_ingest() is not None and UsageEvent.objects.count() == count,
        timeout=10,
        what=f"{count} usage events stored",
    )


def _search(page: Any, term: str) -> None:
    """Type into the customer search and submit: one click."""
    page.goto("/admin/customers/")
    page.fill("#customer-q", term)
    page.click(".customer-search input[type=submit]")
    page.wait_for_selector("#customer-summary")


def _fits(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= VIEWPORT["width"], f"the page is {width}px wide"


def _cell(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text()).strip()


def test_why_did_the_customer_get_429s_and_which_limit(
    support: Any, shots: Shots, gateway: GatewayThread, workspace: Workspace, upstream: Any
) -> None:
    tenant = _tenant(
        workspace,
        upstream,
        rate_limits=[{"type": "REQUEST", "unit": "MINUTE", "threshold": 3}],
        usage_limits=[{"type": "TOKEN", "unit": "DAY", "threshold": 1_000_000}],
    )
    statuses = _send(gateway, tenant.key, 8)
    assert statuses == [200] * 3 + [429] * 5
    wait_until(
        lambda: (
            sum(r.count for r in group_rejections(group_id=tenant.group.pk, now=timezone.now()))
            == 5
        ),
        what="5 rejections recorded",
    )

    _search(support, "initech-billing-7")
    shots("customer-page-429s")

    row = "#rejected-limits tr[data-limit='REQUEST/MINUTE']"
    assert _cell(support, f"{row} td.count") == "5"
    assert "REQUEST MINUTE ≤ 3" in _cell(support, row)
    assert "this group" in _cell(support, row)
    reasons = support.locator("#recent-rejections tbody tr")
    assert reasons.count() == 5
    assert "REQUEST limit of 3 per minute" in str(reasons.first.inner_text())
    assert tenant.prefix in str(reasons.first.inner_text())
    assert "/ 3 requests" in _cell(support, "#limit-bars tr[data-limit='REQUEST/MINUTE'] td.used")
    assert "/ 1,000,000 tokens" in _cell(support, "#limit-bars tr[data-limit='TOKEN/DAY'] td.used")
    _fits(support)


@pytest.fixture
def eager() -> Iterator[None]:
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


def test_did_the_customers_usage_reach_billing(
    support: Any,
    shots: Shots,
    gateway: GatewayThread,
    workspace: Workspace,
    upstream: Any,
    settings: Any,
    eager: None,
) -> None:
    settings.GATEWAY_WEBHOOK_FLUSH_SECONDS = 0
    tenant = _tenant(workspace, upstream)
    with WebhookReceiverThread(secret=SECRET) as receiver:
        endpoint = WebhookEndpoint.objects.create(workspace=workspace, url=receiver.url)
        WebhookSecret.objects.create(endpoint=endpoint, ciphertext=encrypt(SECRET))
        assert _send(gateway, tenant.key, 4) == [200] * 4
        _events_stored(4)
        deliveries_enqueue_due()
        wait_until(lambda: len(receiver.receiver.events()) == 4, what="4 events received")

    _search(support, "initech-billing-7")
    shots("customer-page-billing")
    today = "#billing-state tr[data-window='today']"
    assert _cell(support, f"{today} td[data-state='delivered']") == "4"
    assert _cell(support, f"{today} td[data-state='waiting for batching']") == "0"
    assert _cell(support, f"{today} td[data-state='failed']") == "0"
    states = support.locator("#customer-events td.state").all_inner_texts()
    assert [state.strip() for state in states] == ["delivered"] * 4
    support.locator("#customer-events a.delivery").first.click()
    support.wait_for_load_state()
    shots("delivery")

    delivery = WebhookDelivery.objects.get()
    assert support.url.endswith(f"/admin/billing/webhookdelivery/{delivery.pk}/change/")
    assert delivery.status == "delivered" and delivery.event_count == 4
    assert set(receiver.receiver.events()) == set(
        UsageEvent.objects.values_list("idempotency_key", flat=True)
    )
    assert "delivered" in support.locator("#content").inner_text().lower()
    _fits(support)


def test_was_the_leaked_key_used_and_how_much(
    support: Any, shots: Shots, gateway: GatewayThread, workspace: Workspace, upstream: Any
) -> None:
    tenant = _tenant(workspace, upstream)
    other, other_plaintext = api_key_create(
        workspace=workspace, group=tenant.group, actor=SYSTEM_ACTOR, name="ci"
    )
    assert _send(gateway, tenant.key, 3) == [200] * 3
    assert _send(gateway, other_plaintext, 1) == [200]
    _events_stored(4)
    wait_until(lambda: keys_last_used_pending(prefixes=[tenant.prefix]), what="key use noted")
    leaked = UsageEvent.objects.filter(api_key_prefix=tenant.prefix)
    tokens = leaked.aggregate(n=Sum(F("input_tokens") + F("output_tokens")))["n"]

    _search(support, tenant.key)
    shots("customer-page-leaked-key")

    assert tenant.key.split(".", 1)[1] not in support.content()
    assert tenant.key.split(".", 1)[1] not in support.url
    row = f"#customer-keys tr[data-prefix='{tenant.prefix}']"
    assert "highlight" in str(support.locator(row).get_attribute("class"))
    assert _cell(support, f"{row} td.requests-month") == "3"
    assert _cell(support, f"{row} td.tokens-month") == f"{tokens:,}"
    assert _cell(support, f"{row} td.last-used").endswith(" UTC")
    assert _cell(support, f"{row} td.last-used") != "never"
    other_row = f"#customer-keys tr[data-prefix='{other.prefix}']"
    assert _cell(support, f"{other_row} td.requests-month") == "1"
    _fits(support)
