"""Billing admin: read-only events, secret rotation, enable/disable, resend, recover."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from billing.models import (
    DeliveryAttempt,
    UsageEvent,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
)
from billing.selectors import webhook_secrets_active
from billing.services.attempts import delivery_attempt_run
from billing.services.batching import events_batch
from groups.models import AuditEvent, Workspace
from tests.billing.conftest import SECRET, one_event_batched
from tests.fakes.webhook_receiver import WebhookReceiverThread


def _action(client: Client, model: str, action: str, ids: list[str], **extra: str) -> Any:
    data = {"action": action, "_selected_action": ids, **extra}
    return client.post(f"/admin/billing/{model}/", data)


def _confirmed(client: Client, model: str, action: str, ids: list[str]) -> Any:
    """Run an action that asks first: its confirmation page, then "Yes", then the redirect."""
    asked = _action(client, model, action, ids)
    assert asked.status_code == 200 and b'name="confirm" value="yes"' in asked.content
    return client.post(
        f"/admin/billing/{model}/",
        {"action": action, "_selected_action": ids, "confirm": "yes"},
        follow=True,
    )


@pytest.fixture
def failed(
    endpoint: WebhookEndpoint,
    receiver: WebhookReceiverThread,
    make_event: Callable[..., UsageEvent],
) -> tuple[WebhookDelivery, datetime]:
    """One event's delivery, batched 10 s from now, failed for good by a 500 on its last attempt;
    with that time."""
    delivery, now = one_event_batched(make_event)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(attempts=10)
    receiver.receiver.fail_next(1, 500)
    delivery_attempt_run(delivery_id=delivery.id, now=now)
    delivery.refresh_from_db()
    assert delivery.status == "failed"
    return delivery, now


def test_usage_events_are_searchable_and_read_only(
    admin_client: Client, make_event: Callable[..., UsageEvent]
) -> None:
    event = make_event(request_id="req-findme")
    make_event()

    listing = admin_client.get("/admin/billing/usageevent/", {"q": "req-findme"})
    detail = admin_client.post(
        f"/admin/billing/usageevent/{event.pk}/change/", {"status": "cancelled"}
    )

    assert listing.status_code == 200 and listing.context["cl"].result_count == 1
    assert detail.status_code == 403
    assert admin_client.get("/admin/billing/usageevent/add/").status_code == 403


def test_adding_an_endpoint_shows_its_secret_once(
    admin_client: Client, workspace: Workspace
) -> None:
    response = admin_client.post(
        "/admin/billing/webhookendpoint/add/",
        {"workspace": workspace.pk, "url": "http://127.0.0.1:9/hook"},
    )
    shown = admin_client.get(response["Location"])
    reloaded = admin_client.get(response["Location"])

    endpoint = WebhookEndpoint.objects.get()
    assert response.status_code == 303
    [secret] = re.findall(r"whsec_[A-Za-z0-9+/=]+", shown.content.decode())
    assert webhook_secrets_active(endpoint=endpoint, now=timezone.now()) == [secret]
    assert "no-cache" in shown["Cache-Control"]
    assert "whsec_" not in reloaded.content.decode() and b"already shown" in reloaded.content


def test_rotating_signs_with_both_secrets_until_the_overlap_ends(
    admin_client: Client, endpoint: WebhookEndpoint, settings: Any
) -> None:
    settings.GATEWAY_WEBHOOK_SECRET_OVERLAP_HOURS = 24

    response = _confirmed(admin_client, "webhookendpoint", "rotate_secret", [endpoint.pk])

    [new] = re.findall(r"whsec_[A-Za-z0-9+/=]+", response.content.decode())
    now = timezone.now()
    assert webhook_secrets_active(endpoint=endpoint, now=now) == [new, SECRET]
    assert webhook_secrets_active(endpoint=endpoint, now=now + timedelta(hours=25)) == [new]
    assert AuditEvent.objects.filter(action="webhook_secret.rotate", object_id=endpoint.pk).exists()


def test_a_rotated_delivery_verifies_with_either_secret(
    admin_client: Client,
    endpoint: WebhookEndpoint,
    receiver: WebhookReceiverThread,
    make_event: Callable[..., UsageEvent],
) -> None:
    response = _confirmed(admin_client, "webhookendpoint", "rotate_secret", [endpoint.pk])
    [new] = re.findall(r"whsec_[A-Za-z0-9+/=]+", response.content.decode())
    make_event()
    now = timezone.now() + timedelta(seconds=10)
    events_batch(now=now)

    delivery_attempt_run(delivery_id=WebhookDelivery.objects.get().id, now=now)

    [got] = receiver.receiver.deliveries
    headers = {
        "webhook-id": got.webhook_id,
        "webhook-timestamp": got.timestamp,
        "webhook-signature": got.signature,
    }
    assert len(got.signature.split(" ")) == 2
    Webhook(new).verify(got.body, headers)
    Webhook(SECRET).verify(got.body, headers)


def test_disable_parks_deliveries_and_enable_resumes_them(
    admin_client: Client, endpoint: WebhookEndpoint, make_event: Callable[..., UsageEvent]
) -> None:
    make_event()
    events_batch(now=timezone.now() + timedelta(seconds=10))

    _confirmed(admin_client, "webhookendpoint", "disable", [endpoint.pk])
    parked = WebhookDelivery.objects.get().status
    _action(admin_client, "webhookendpoint", "enable", [endpoint.pk])

    assert parked == "disabled"
    assert WebhookDelivery.objects.get().status == "pending"
    endpoint.refresh_from_db()
    assert endpoint.enabled


def test_resend_makes_exactly_one_more_attempt_with_the_same_id(
    admin_client: Client,
    failed: tuple[WebhookDelivery, datetime],
    receiver: WebhookReceiverThread,
) -> None:
    delivery, now = failed

    _action(admin_client, "webhookdelivery", "resend", [delivery.pk])
    delivery_attempt_run(delivery_id=delivery.id, now=now + timedelta(seconds=20))

    delivery.refresh_from_db()
    assert delivery.status == "delivered"
    assert [d.webhook_id for d in receiver.receiver.deliveries] == [delivery.id, delivery.id]
    assert DeliveryAttempt.objects.filter(delivery=delivery).count() == 2


def test_recover_asks_for_a_time_and_requeues_what_failed_since(
    admin_client: Client, failed: tuple[WebhookDelivery, datetime]
) -> None:
    delivery, _ = failed
    since = (timezone.now() - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")

    form = admin_client.get("/admin/billing/webhookdelivery/recover/")
    redirect = _action(admin_client, "webhookdelivery", "recover_failed_since", [delivery.pk])
    done = admin_client.post("/admin/billing/webhookdelivery/recover/", {"since": since})

    assert form.status_code == 200 and b'name="since"' in form.content
    assert redirect.status_code == 302 and redirect["Location"].endswith("/recover/")
    assert done.status_code == 302
    delivery.refresh_from_db()
    assert delivery.status == "pending"


def test_delivery_pages_render_with_attempts_and_health(
    admin_client: Client, endpoint: WebhookEndpoint, failed: tuple[WebhookDelivery, datetime]
) -> None:
    delivery, _ = failed

    listing = admin_client.get("/admin/billing/webhookdelivery/", {"status__exact": "failed"})
    detail = admin_client.get(f"/admin/billing/webhookdelivery/{delivery.pk}/change/")
    endpoint_page = admin_client.get(f"/admin/billing/webhookendpoint/{endpoint.pk}/change/")

    assert listing.status_code == 200 and delivery.pk in listing.content.decode()
    assert detail.status_code == 200 and b"API_BILLING_USAGE" in detail.content
    assert b"Failed deliveries: 1;" in endpoint_page.content
    assert b"Last delivery error: HTTP 500" in endpoint_page.content
    assert WebhookSecret.objects.filter(endpoint=endpoint).count() == 1


def test_the_usage_dashboard_charts_requests_and_tokens_per_slug(
    admin_client: Client, workspace: Workspace, make_event: Callable[..., UsageEvent]
) -> None:
    now = timezone.now()
    make_event(timestamp=now - timedelta(minutes=5), model_slug="acme/llama")
    make_event(timestamp=now - timedelta(days=3), model_slug="acme/qwen", input_tokens=7)

    response = admin_client.get("/admin/billing/usageevent/dashboard/", {"workspace": workspace.pk})

    assert response.status_code == 200
    charts = dict(response.context["charts"])
    llama_day, llama_day_tokens, llama_month, _ = charts["acme/llama"]
    assert (llama_day.total, llama_day_tokens.total, llama_month.total) == (1, 300, 1)
    assert charts["acme/qwen"][0].total == 0 and charts["acme/qwen"][3].total == 207
    assert len(llama_day.bars) == 24 and len(llama_month.bars) == 30
    assert b"<svg" in response.content and b"cdn" not in response.content.lower()
    assert b"/static/billing/vendor/chart-4.6.1.umd.min.js" in response.content
    embedded = [
        json.loads(block)
        for block in re.findall(
            r'<script type="application/json">(.*?)</script>', response.content.decode()
        )
    ]
    assert len(embedded) == 8  # 4 charts per slug, each with the data Chart.js draws
    tokens_day = next(d for d in embedded if d["title"] == "Tokens, last 24 h" and sum(d["values"]))
    assert tokens_day["metric"] == "tokens" and sum(tokens_day["values"]) == 300
    assert len(tokens_day["labels"]) == 24


def test_the_usage_dashboard_narrows_to_one_group(
    admin_client: Client, workspace: Workspace, make_event: Callable[..., UsageEvent]
) -> None:
    from groups.models import Group

    other = Group.objects.create(workspace=workspace, external_entity_id="cust_9")
    make_event()
    make_event(group=other, external_entity_id="cust_9")

    response = admin_client.get(
        "/admin/billing/usageevent/dashboard/", {"workspace": workspace.pk, "group": other.pk}
    )

    assert dict(response.context["charts"])["acme/llama"][0].total == 1


def test_a_compromise_rotation_drops_the_old_secret_at_once(
    admin_client: Client, endpoint: WebhookEndpoint
) -> None:
    response = _confirmed(admin_client, "webhookendpoint", "rotate_secret_now", [endpoint.pk])

    [new] = re.findall(r"whsec_[A-Za-z0-9+/=]+", response.content.decode())
    assert webhook_secrets_active(endpoint=endpoint, now=timezone.now()) == [new]


def test_adding_a_webhook_endpoint_on_a_private_address_is_a_form_error(
    admin_client: Client, workspace: Workspace
) -> None:
    url = reverse("admin:billing_webhookendpoint_add")

    response = admin_client.post(url, {"workspace": workspace.pk, "url": "https://10.0.0.7/hook"})

    assert response.status_code == 200
    assert "non-public address" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()
