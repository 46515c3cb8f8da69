"""The audit trail: every mutation, from the API or the admin, writes one row."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from groups.models import AuditEvent


def audit_event(
    *,
    actor: str,
    action: str,
    obj_type: str,
    obj_id: str,
    workspace_id: str | None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    """One audit row, not saved yet (`audit_record` saves one, `audit_records` many)."""
    return AuditEvent(
        actor=actor,
        action=action,
        object_type=obj_type,
        object_id=obj_id,
        workspace_id=workspace_id,
        before=before,
        after=after,
    )


def audit_record(
    *,
    actor: str,
    action: str,
    obj_type: str,
    obj_id: str,
    workspace_id: str | None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    """Write one audit row; call inside the mutation's transaction."""
    event = audit_event(
        actor=actor,
        action=action,
        obj_type=obj_type,
        obj_id=obj_id,
        workspace_id=workspace_id,
        before=before,
        after=after,
    )
    event.save(force_insert=True)
    return event


def audit_records(events: Iterable[AuditEvent]) -> None:
    """Write the audit rows of a batch in one INSERT; call inside the batch's transaction."""
    AuditEvent.objects.bulk_create(events)


def staff_actor(username: str) -> str:
    """The actor string of a staff user acting in the admin."""
    return f"staff:{username}"


SYSTEM_ACTOR = "system"
