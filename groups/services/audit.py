"""The audit trail: every mutation, from the API or the admin, writes one row."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NotRequired, TypedDict, Unpack

from gateway_project.kernel.compiled import CompiledInsert
from groups.models import AuditEvent

_AUDIT_INSERT = CompiledInsert(AuditEvent)


class AuditFields(TypedDict):
    """Who did what to which object, and its state before and after."""

    actor: str
    action: str
    obj_type: str
    obj_id: str
    workspace_id: str | None
    before: NotRequired[dict[str, Any] | None]
    after: NotRequired[dict[str, Any] | None]


def audit_event(**fields: Unpack[AuditFields]) -> AuditEvent:
    """One audit row, not saved yet (`audit_record` saves one, `audit_records` many)."""
    return AuditEvent(
        actor=fields["actor"],
        action=fields["action"],
        object_type=fields["obj_type"],
        object_id=fields["obj_id"],
        workspace_id=fields["workspace_id"],
        before=fields.get("before"),
        after=fields.get("after"),
    )


def audit_record(**fields: Unpack[AuditFields]) -> AuditEvent:
    """Write one audit row; call inside the mutation's transaction."""
    event = audit_event(**fields)
    _AUDIT_INSERT.insert([event])
    return event


def audit_records(events: Iterable[AuditEvent]) -> None:
    """Write the audit rows of a batch in one INSERT; call inside the batch's transaction."""
    _AUDIT_INSERT.insert(list(events))


def staff_actor(username: str) -> str:
    """The actor string of a staff user acting in the admin."""
    return f"staff:{username}"


SYSTEM_ACTOR = "system"
