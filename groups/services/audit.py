"""The audit trail: every mutation, from the API or the admin, writes one row."""

from __future__ import annotations

from typing import Any

from groups.models import AuditEvent


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
    return AuditEvent.objects.create(
        actor=actor,
        action=action,
        object_type=obj_type,
        object_id=obj_id,
        workspace_id=workspace_id,
        before=before,
        after=after,
    )


def staff_actor(username: str) -> str:
    """The actor string of a staff user acting in the admin."""
    return f"staff:{username}"


SYSTEM_ACTOR = "system"
