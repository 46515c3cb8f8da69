"""Legacy federated users: root INDEPENDENT groups keyed by `customer_id`."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from gateway_project.kernel.errors import ValidationFailed
from groups.limits import INDEPENDENT, models_parse
from groups.models import Group, Workspace
from groups.selectors import group_get
from groups.services.hierarchy import group_delete, group_insert, group_update
from groups.services.hierarchy_rules import models_required
from groups.services.tenants import text_check


@transaction.atomic
def user_upsert(
    *, workspace: Workspace, customer_id: str, models: list[dict[str, Any]], actor: str
) -> tuple[Group, bool]:
    """Create a legacy user (a root INDEPENDENT group) or replace its models; True when created."""
    text_check(
        customer_id,
        param="customer_id",
        code="invalid_external_entity_id",
        min_length=1,
        max_length=255,
    )
    existing = (
        Group.objects.select_for_update()
        .filter(workspace=workspace, external_entity_id=customer_id, deleted_at__isnull=True)
        .first()
    )
    if existing is None:
        group = group_insert(
            workspace=workspace,
            actor=actor,
            external_entity_id=customer_id,
            models=models,
            name="",
            limit_enforcement=INDEPENDENT,
            parent_group_id=None,
            is_legacy_user=True,
            id_param="customer_id",
        )
        return group, True
    if not existing.is_legacy_user:
        raise ValidationFailed(
            f"customer_id {customer_id!r} is taken by a group",
            code="external_id_taken",
            param="customer_id",
        )
    models_required(models_parse(models))
    return group_update(
        workspace=workspace, group_id=existing.id, actor=actor, models=models
    ), False


def user_delete(*, workspace: Workspace, user_id: str, actor: str) -> Group:
    """Soft-delete a legacy user; its keys stop working."""
    user = group_get(workspace=workspace, group_id=user_id, legacy=True)
    return group_delete(workspace=workspace, group_id=user.id, actor=actor)
