"""Quarantine: rows a pipeline step set aside, released by staff once the cause is fixed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import QuerySet, Value
from django.db.models.functions import Concat, Left
from django.utils import timezone

from billing.models import DeliveryStatus, UsageEvent, WebhookDelivery
from groups.services.audit import audit_record


def usage_events_release(*, ids: list[str], actor: str, drop_metadata: bool = False) -> int:
    """Put quarantined events back in line for batching (the next beat tries them again);
    `drop_metadata` empties their metadata first, for metadata that can never be sent."""
    changes: dict[str, Any] = {}
    if drop_metadata:
        note = Left(Concat(Value("requestMetadata dropped by staff; "), "ingest_note"), 500)
        changes = {"request_metadata": {}, "ingest_note": note}
    return _release(
        UsageEvent.objects.filter(pk__in=ids, quarantined_at__isnull=False),
        workspace_field="workspace_id",
        error_field="quarantine_error",
        changes={"quarantined_at": None, "quarantine_error": "", "batched_at": None, **changes},
        actor=actor,
        action="usage_event.release",
        audit=lambda error: {
            "before": {"quarantine_error": error},
            "after": {"metadata_dropped": drop_metadata},
        },
    )


def deliveries_release(*, ids: list[str], actor: str, now: datetime | None = None) -> int:
    """Make quarantined deliveries pending again, due now (same id and bytes)."""
    return _release(
        WebhookDelivery.objects.filter(pk__in=ids, status=DeliveryStatus.QUARANTINED),
        workspace_field="endpoint__workspace_id",
        error_field="last_error",
        changes={
            "status": DeliveryStatus.PENDING,
            "next_attempt_at": now or timezone.now(),
            "lease_until": None,
        },
        actor=actor,
        action="webhook_delivery.release",
        audit=lambda error: {
            "before": {"status": DeliveryStatus.QUARANTINED, "last_error": error},
        },
    )


def _release(
    rows: QuerySet[Any],
    *,
    workspace_field: str,
    error_field: str,
    changes: dict[str, Any],
    actor: str,
    action: str,
    audit: Callable[[str], dict[str, Any]],
) -> int:
    """Apply `changes` to the quarantined `rows` and audit each one released (`audit` gives its
    before/after from the error it was quarantined with); returns how many were released."""
    obj_type = action.split(".")[0]
    with transaction.atomic():
        released = list(rows.values_list("pk", workspace_field, error_field))
        rows.update(**changes)
        for pk, workspace_id, error in released:
            audit_record(
                actor=actor,
                action=action,
                obj_type=obj_type,
                obj_id=pk,
                workspace_id=workspace_id,
                **audit(error),
            )
    return len(released)
