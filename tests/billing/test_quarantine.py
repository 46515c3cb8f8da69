"""Staff releasing quarantined rows: only quarantined ones move, each release is audited with the
error it was set aside for."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django.utils import timezone

from billing.models import DeliveryStatus, UsageEvent, WebhookDelivery, WebhookEndpoint
from billing.services.quarantine import deliveries_release, usage_events_release
from groups.models import AuditEvent, Workspace
from tests.billing.conftest import endpoint_add

ACTOR = "staff:alice"


def quarantined_event(make_event: Callable[..., UsageEvent], error: str) -> UsageEvent:
    return make_event(
        quarantined_at=timezone.now(), quarantine_error=error, batched_at=timezone.now()
    )


def delivery_add(endpoint: WebhookEndpoint, status: str, error: str = "") -> WebhookDelivery:
    return WebhookDelivery.objects.create(
        endpoint=endpoint, body=b"{}", event_count=1, status=status, last_error=error
    )


def test_releasing_events_puts_only_the_quarantined_ones_back_in_line_audited(
    make_event: Callable[..., UsageEvent],
) -> None:
    bad = quarantined_event(make_event, "unreadable requestMetadata")
    fine = make_event()

    released = usage_events_release(ids=[bad.pk, fine.pk], actor=ACTOR)

    bad.refresh_from_db()
    assert released == 1
    assert (bad.quarantined_at, bad.quarantine_error, bad.batched_at) == (None, "", None)
    assert bad.request_metadata == {"trace": "t-1"}
    [audit] = AuditEvent.objects.filter(action="usage_event.release")
    assert (audit.actor, audit.object_type, audit.object_id) == (ACTOR, "usage_event", bad.pk)
    assert audit.workspace_id == bad.workspace_id
    assert audit.before == {"quarantine_error": "unreadable requestMetadata"}
    assert audit.after == {"metadata_dropped": False}


def test_releasing_events_without_metadata_empties_it_and_notes_why(
    make_event: Callable[..., UsageEvent],
) -> None:
    bad = quarantined_event(make_event, "unreadable requestMetadata")

    usage_events_release(ids=[bad.pk], actor=ACTOR, drop_metadata=True)

    bad.refresh_from_db()
    assert bad.request_metadata == {} and bad.quarantined_at is None
    assert bad.ingest_note == "requestMetadata dropped by staff; "
    assert AuditEvent.objects.get(action="usage_event.release").after == {"metadata_dropped": True}


def test_releasing_deliveries_makes_only_the_quarantined_ones_due_audited(
    workspace: Workspace,
) -> None:
    endpoint = endpoint_add(workspace=workspace, url="http://127.0.0.1:9/hooks")
    bad = delivery_add(endpoint, DeliveryStatus.QUARANTINED, "UnicodeEncodeError: 'ascii'")
    failed = delivery_add(endpoint, DeliveryStatus.FAILED)
    now = timezone.now() + timedelta(minutes=1)

    released = deliveries_release(ids=[bad.pk, failed.pk], actor=ACTOR, now=now)

    bad.refresh_from_db()
    failed.refresh_from_db()
    assert released == 1
    assert (bad.status, bad.next_attempt_at, bad.lease_until) == ("pending", now, None)
    assert failed.status == "failed"
    [audit] = AuditEvent.objects.filter(action="webhook_delivery.release")
    assert (audit.actor, audit.object_type, audit.object_id) == (ACTOR, "webhook_delivery", bad.pk)
    assert audit.workspace_id == endpoint.workspace_id
    assert audit.before == {"status": "quarantined", "last_error": "UnicodeEncodeError: 'ascii'"}
    assert audit.after is None
