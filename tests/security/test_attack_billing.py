"""Attacks on the billing pipeline: one tenant's poisoned usage event, stored row or receiver
answer must neither stop billing for the other tenants nor keep its own tokens from being billed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from billing.models import UsageEvent, WebhookDelivery, WebhookEndpoint, WebhookSecret
from billing.services.attempts import delivery_attempt_run
from billing.services.batching import events_batch
from billing.services.ingest import usage_ingest
from billing.services.usage import usage_event_record
from billing.tasks import deliveries_enqueue_due
from gateway_project.celery import app
from gateway_project.kernel.encryption import encrypt
from gateway_project.kernel.ids import new_ulid
from groups.models import Group, Workspace
from tests.billing.scripted_server import Reply, ScriptedServer
from tests.fakes.webhook_receiver import WebhookReceiverThread

SECRET = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


@dataclass
class Tenant:
    """A workspace billed to a verifying receiver on loopback."""

    group: Group
    receiver: WebhookReceiverThread

    def record(self, *, metadata: Any = None, input_tokens: int = 10) -> str:
        """Send one usage event down the path the inference proxy uses; returns its key."""
        key = new_ulid()
        event = {
            "idempotencyKey": key,
            "timestamp": timezone.now().isoformat(),
            "requestId": f"req-{key}",
            "requestMetadata": metadata if metadata is not None else {"trace": "ok"},
            "modelSlug": "acme/llama",
            "externalEntityId": self.group.external_entity_id,
            "apiKeyPrefix": "sky_abc123",
            "groupId": self.group.id,
            "workspaceId": self.group.workspace_id,
            "status": "completed",
            "tokens": {"inputTokens": input_tokens, "outputTokens": 5, "cachedInputTokens": 0},
        }

        async def run() -> None:
            client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
            await usage_event_record(client=client, event=event)
            await client.aclose()

        asyncio.run(run())
        return key

    def billed(self) -> dict[str, dict[str, Any]]:
        return self.receiver.receiver.events()


def tenant_build(workspace: Workspace, receiver: WebhookReceiverThread) -> Tenant:
    group = Group(workspace=workspace, external_entity_id=f"cust-{workspace.pk}")
    group.root = group
    group.save()
    endpoint = WebhookEndpoint.objects.create(workspace=workspace, url=receiver.url)
    WebhookSecret.objects.create(endpoint=endpoint, ciphertext=encrypt(SECRET))
    return Tenant(group=group, receiver=receiver)


@pytest.fixture
def tenants(workspace: Workspace, other_workspace: Workspace) -> Iterator[tuple[Tenant, Tenant]]:
    with WebhookReceiverThread(secret=SECRET) as a, WebhookReceiverThread(secret=SECRET) as b:
        yield tenant_build(workspace, a), tenant_build(other_workspace, b)


@pytest.fixture
def beat(settings: Any) -> Iterator[None]:
    """The billing beat runs its tasks inline and flushes every batch at once."""
    settings.GATEWAY_WEBHOOK_FLUSH_SECONDS = 0
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


def billing_runs() -> None:
    """What Celery beat does every second: ingest, then batch, enqueue and send."""
    usage_ingest()
    deliveries_enqueue_due()


def strict_json(body: bytes) -> Any:
    """Parse as a strict receiver would: no NaN or Infinity, valid UTF-8."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(body.decode("utf-8"), parse_constant=refuse)


def test_lone_surrogate_metadata_cannot_halt_billing_for_every_tenant(
    beat: None, tenants: tuple[Tenant, Tenant]
) -> None:
    attacker, victim = tenants
    sent_a = [attacker.record(), attacker.record(metadata={"a": "\ud800"}, input_tokens=77)]
    sent_b = [victim.record(), victim.record()]

    billing_runs()
    billing_runs()

    assert set(victim.billed()) == set(sent_b)
    assert set(attacker.billed()) == set(sent_a)
    assert attacker.billed()[sent_a[1]]["tokens"]["inputTokens"] == 77


@pytest.mark.parametrize(
    "metadata",
    [{"a": "x\u0000y"}, {"a": float("nan")}, {"a": float("inf")}],
    ids=["nul", "nan", "infinity"],
)
def test_metadata_the_database_refuses_cannot_keep_a_request_from_being_billed(
    beat: None, tenants: tuple[Tenant, Tenant], metadata: dict[str, Any]
) -> None:
    attacker, _ = tenants
    key = attacker.record(metadata=metadata, input_tokens=42)

    billing_runs()

    assert attacker.billed()[key]["tokens"]["inputTokens"] == 42
    for delivery in attacker.receiver.receiver.deliveries:
        strict_json(delivery.body)
    assert UsageEvent.objects.get(pk=key).ingest_note


def test_an_unreadable_stored_event_cannot_halt_billing_for_every_tenant(
    beat: None, tenants: tuple[Tenant, Tenant]
) -> None:
    attacker, victim = tenants
    poisoned = attacker.record()
    usage_ingest()
    cast = "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE billing_usageevent SET request_metadata = {cast} WHERE idempotency_key = %s",
            ['{"a":1' + "0" * 5000 + "}", poisoned],  # past Python's integer digit limit
        )
    sent_a, sent_b = [attacker.record()], [victim.record(), victim.record()]

    billing_runs()

    assert set(victim.billed()) == set(sent_b)
    assert set(attacker.billed()) == set(sent_a)
    assert UsageEvent.objects.get(pk=poisoned).quarantined_at is not None


def test_a_receiver_answering_nul_bytes_cannot_wedge_its_deliveries(
    workspace: Workspace,
) -> None:
    group = Group(workspace=workspace, external_entity_id="cust-1")
    group.root = group
    group.save()
    UsageEvent.objects.create(
        request_id="req-1",
        timestamp=timezone.now(),
        workspace=workspace,
        group=group,
        model_slug="acme/llama",
        status="completed",
        input_tokens=1,
    )
    with ScriptedServer(Reply(200, body=b"ok\x00")) as server:
        endpoint = WebhookEndpoint.objects.create(workspace=workspace, url=server.url)
        WebhookSecret.objects.create(endpoint=endpoint, ciphertext=encrypt(SECRET))
        now = timezone.now() + timedelta(seconds=10)
        events_batch(now=now)
        delivery = WebhookDelivery.objects.get()

        delivery_attempt_run(delivery_id=delivery.id, now=now)

    delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.lease_until is None


@pytest.mark.parametrize(
    ("model", "action"),
    [
        ("webhookdelivery", "resend"),
        ("webhookdelivery", "release"),
        ("webhookendpoint", "rotate_secret"),
        ("webhookendpoint", "rotate_secret_now"),
        ("webhookendpoint", "disable"),
        ("usageevent", "release"),
        ("usageevent", "release_without_metadata"),
    ],
)
def test_view_only_staff_cannot_run_billing_write_actions(
    client: Any, workspace: Workspace, django_user_model: Any, model: str, action: str
) -> None:
    from django.contrib.auth.models import Permission

    from groups.models import AuditEvent

    with WebhookReceiverThread(secret=SECRET) as receiver:
        tenant = tenant_build(workspace, receiver)
        key = tenant.record()
        usage_ingest()
        events_batch(now=timezone.now() + timedelta(seconds=10))
    UsageEvent.objects.update(quarantined_at=timezone.now())
    WebhookDelivery.objects.update(status="quarantined")
    target = {
        "webhookdelivery": WebhookDelivery.objects.get().pk,
        "webhookendpoint": WebhookEndpoint.objects.get().pk,
        "usageevent": key,
    }[model]
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__startswith="view_"))
    client.force_login(viewer)
    secrets_before = WebhookSecret.objects.count()

    response = client.post(
        f"/admin/billing/{model}/", {"action": action, "_selected_action": [target]}
    )

    assert b"whsec_" not in response.content
    assert WebhookSecret.objects.count() == secrets_before
    assert not AuditEvent.objects.exists()
    assert WebhookDelivery.objects.get().status == "quarantined"
    assert WebhookEndpoint.objects.get().enabled
    assert UsageEvent.objects.get().quarantined_at is not None
