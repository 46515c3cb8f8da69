"""Writes of the customer hierarchy: groups, their models and limits (users build on these).

Every service validates the hierarchy rules itself (the API and the admin both call it), runs in one
transaction, writes an audit row and announces data-plane changes with `config_changed`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import prefetch_related_objects
from django.utils import timezone

from gateway_project.errors import ValidationFailed
from groups.audit import audit_record
from groups.catalog import live_endpoint_slugs
from groups.invalidation import config_changed
from groups.limits import (
    CASCADING,
    INDEPENDENT,
    GroupLimits,
    ModelSpec,
    ceiling_violation,
    limit_param,
    models_parse,
)
from groups.models import Group, GroupModel, ModelLimit, Workspace
from groups.selectors import (
    group_chain,
    group_get,
    group_limits,
    group_models,
    group_subtree,
    models_prefetch,
)
from groups.services.tenants import text_check

MAX_DEPTH = 5


def group_snapshot(group: Group) -> dict[str, Any]:
    """The audited state of a group, models included."""
    return {
        "id": group.id,
        "name": group.name,
        "external_entity_id": group.external_entity_id,
        "parent_group_id": group.parent_id,
        "limit_enforcement": group.limit_enforcement,
        "is_legacy_user": group.is_legacy_user,
        "models": group_models(group=group),
        "deleted_at": group.deleted_at.isoformat() if group.deleted_at else None,
    }


def models_required(specs: list[ModelSpec], *, param: str = "models") -> list[ModelSpec]:
    """The specs, unless empty (creation needs at least one model)."""
    if not specs:
        raise ValidationFailed("models must not be empty", code="models_required", param=param)
    return specs


def _slugs_live_check(*, workspace: Workspace, specs: Sequence[ModelSpec], param: str) -> None:
    live = live_endpoint_slugs(workspace_id=workspace.id, slugs=[spec.slug for spec in specs])
    for index, spec in enumerate(specs):
        if spec.slug not in live:
            raise ValidationFailed(
                f"{spec.slug} is not a live endpoint of this workspace: create it first with "
                "POST /v1/gateway/endpoints (or have the gateway's staff create it in the admin), "
                "then list it here.",
                code="unknown_slug",
                param=f"{param}[{index}].slug",
            )


def _tree_lock(group: Group) -> None:
    # Every edit of a tree locks its root row, so concurrent edits of a parent and a child cannot
    # each pass the subset/ceiling checks against the other's old state.
    root_id = group.root_id or group.id
    Group.objects.select_for_update().filter(pk=root_id).values_list("pk", flat=True).first()


def _group_locked(*, workspace: Workspace, group_id: str) -> Group:
    """The live group, re-read once its tree is locked (it may have been deleted meanwhile)."""
    _tree_lock(group_get(workspace=workspace, group_id=group_id))
    return group_get(workspace=workspace, group_id=group_id)


def _parent_resolve(*, workspace: Workspace, parent_group_id: Any) -> Group | None:
    if parent_group_id is None:
        return None
    parent = None
    if isinstance(parent_group_id, str):
        parent = Group.objects.filter(
            workspace=workspace, pk=parent_group_id, deleted_at__isnull=True
        ).first()
    if parent is None:
        raise ValidationFailed(
            f"No live group {parent_group_id!r} in this workspace",
            code="parent_not_found",
            param="hierarchy.parent_group_id",
        )
    if parent.is_legacy_user:
        # /groups never lists users, so a user may not sit inside a tree of groups either.
        raise ValidationFailed(
            f"{parent_group_id!r} is a legacy user, not a group; a user cannot be a parent",
            code="invalid_parent_group",
            param="hierarchy.parent_group_id",
        )
    if parent.depth >= MAX_DEPTH:
        raise ValidationFailed(
            f"groups nest at most {MAX_DEPTH} levels deep",
            code="depth_exceeded",
            param="hierarchy.parent_group_id",
        )
    return parent


def _mode_resolve(limit_enforcement: Any, parent: Group | None) -> str:
    param = "hierarchy.limit_enforcement"
    if limit_enforcement is not None and limit_enforcement not in (INDEPENDENT, CASCADING):
        raise ValidationFailed(
            "limit_enforcement must be INDEPENDENT or CASCADING",
            code="invalid_limit_enforcement",
            param=param,
        )
    if parent is None:
        return str(limit_enforcement or INDEPENDENT)
    if limit_enforcement is not None and limit_enforcement != parent.limit_enforcement:
        raise ValidationFailed(
            f"a child's limit_enforcement must equal its parent's ({parent.limit_enforcement})",
            code="mode_mismatch",
            param=param,
        )
    return parent.limit_enforcement


def _ancestors_fit(
    *, specs: list[ModelSpec], group_id: str, mode: str, ancestors: list[Group]
) -> None:
    """A group's models against its ancestors: within the parent's slugs and CASCADING ceilings."""
    if not ancestors:
        return
    own = GroupLimits(group_id=group_id, models={spec.slug: spec.limits for spec in specs})
    parent_slugs = set(group_limits(group=ancestors[-1]).models)
    for index, spec in enumerate(specs):
        if spec.slug not in parent_slugs:
            raise ValidationFailed(
                f"{spec.slug} is not in the parent group's models",
                code="slug_not_in_parent",
                param=f"models[{index}].slug",
            )
    if mode != CASCADING:
        return
    for ancestor in ancestors:
        found = ceiling_violation(lower=own, upper=group_limits(group=ancestor))
        if found:
            slug, limit, ceiling = found
            raise ValidationFailed(
                f"{slug} {limit.type}/{limit.unit} {limit.threshold} exceeds ancestor "
                f"{ancestor.id}'s {ceiling.threshold}: raise ancestors first",
                code="ceiling_exceeded",
                param=limit_param(specs, slug=slug, limit=limit, param="models"),
            )


def _descendants_fit(*, specs: list[ModelSpec], group: Group) -> None:
    """A group's new models against its live descendants: keep their slugs and stay above them."""
    slugs = {spec.slug for spec in specs}
    own = GroupLimits(group_id=group.id, models={spec.slug: spec.limits for spec in specs})
    descendants = group_subtree(group=group)
    prefetch_related_objects(descendants, models_prefetch())
    for descendant in descendants:
        limits = group_limits(group=descendant)
        missing = sorted(set(limits.models) - slugs)
        if missing:
            raise ValidationFailed(
                f"{missing[0]} is still used by descendant {descendant.id}: remove it there first",
                code="slug_in_use_by_child",
                param="models",
            )
        found = (
            ceiling_violation(lower=limits, upper=own)
            if group.limit_enforcement == CASCADING
            else None
        )
        if found:
            slug, limit, ceiling = found
            raise ValidationFailed(
                f"{slug} {ceiling.type}/{ceiling.unit} {ceiling.threshold} is below descendant "
                f"{descendant.id}'s {limit.threshold}: lower descendants first",
                code="ceiling_below_descendant",
                param=limit_param(specs, slug=slug, limit=ceiling, param="models"),
            )


def _models_write(group: Group, specs: list[ModelSpec]) -> None:
    GroupModel.objects.filter(group=group).delete()
    accesses = GroupModel.objects.bulk_create(
        [
            GroupModel(group=group, slug=spec.slug, position=index)
            for index, spec in enumerate(specs)
        ]
    )
    ModelLimit.objects.bulk_create(
        ModelLimit(
            access=access, kind=lim.kind, type=lim.type, unit=lim.unit, threshold=lim.threshold
        )
        for access, spec in zip(accesses, specs, strict=True)
        for lim in spec.limits
    )
    if hasattr(group, "_prefetched_objects_cache"):
        group._prefetched_objects_cache.pop("model_access", None)


def _external_id_check(*, workspace: Workspace, value: Any, param: str) -> str:
    external_id = text_check(
        value, param=param, code="invalid_external_entity_id", min_length=1, max_length=255
    )
    if Group.objects.filter(
        workspace=workspace, external_entity_id=external_id, deleted_at__isnull=True
    ).exists():
        raise ValidationFailed(
            f"external_entity_id {external_id!r} is taken", code="external_id_taken", param=param
        )
    return external_id


def _row_insert(group: Group, *, param: str) -> None:
    try:
        with transaction.atomic():
            group.save(force_insert=True)
    except IntegrityError as exc:  # a concurrent create won the partial unique index
        raise ValidationFailed(
            f"external_entity_id {group.external_entity_id!r} is taken",
            code="external_id_taken",
            param=param,
        ) from exc


def group_insert(
    *,
    workspace: Workspace,
    actor: str,
    external_entity_id: Any,
    models: Any,
    name: Any,
    limit_enforcement: Any,
    parent_group_id: Any,
    is_legacy_user: bool,
    id_param: str,
) -> Group:
    """Validate and insert a group or a legacy user (`id_param` names the external id's field)."""
    text_check(name, param="metadata.name", code="invalid_name", min_length=0, max_length=255)
    text_check(
        external_entity_id,
        param=id_param,
        code="invalid_external_entity_id",
        min_length=1,
        max_length=255,
    )
    specs = models_required(models_parse(models))
    parent = _parent_resolve(workspace=workspace, parent_group_id=parent_group_id)
    if parent is not None:
        _tree_lock(parent)
        parent = _parent_resolve(workspace=workspace, parent_group_id=parent_group_id)
    mode = _mode_resolve(limit_enforcement, parent)
    _slugs_live_check(workspace=workspace, specs=specs, param="models")
    group = Group(
        workspace=workspace,
        parent=parent,
        name=name,
        limit_enforcement=mode,
        is_legacy_user=is_legacy_user,
    )
    group.root_id = (parent.root_id or parent.id) if parent is not None else group.id
    group.depth = parent.depth + 1 if parent is not None else 1
    _ancestors_fit(
        specs=specs,
        group_id=group.id,
        mode=mode,
        ancestors=group_chain(group=parent) if parent else [],
    )
    group.external_entity_id = _external_id_check(
        workspace=workspace, value=external_entity_id, param=id_param
    )
    _row_insert(group, param=id_param)
    _models_write(group, specs)
    audit_record(
        actor=actor,
        action="group.create",
        obj_type="group",
        obj_id=group.id,
        workspace_id=workspace.id,
        after=group_snapshot(group),
    )
    return group


@transaction.atomic
def group_create(
    *,
    workspace: Workspace,
    actor: str,
    external_entity_id: str,
    models: list[dict[str, Any]],
    name: str = "",
    limit_enforcement: str | None = None,
    parent_group_id: str | None = None,
) -> Group:
    """Create a group (a root, or a child under a live parent of the same workspace)."""
    return group_insert(
        workspace=workspace,
        actor=actor,
        external_entity_id=external_entity_id,
        models=models,
        name="" if name is None else name,
        limit_enforcement=limit_enforcement,
        parent_group_id=parent_group_id,
        is_legacy_user=False,
        id_param="metadata.external_entity_id",
    )


@transaction.atomic
def group_update(
    *,
    workspace: Workspace,
    group_id: str,
    actor: str,
    name: str | None = None,
    models: list[dict[str, Any]] | None = None,
) -> Group:
    """Rename a group and/or replace its models set; descendants' effective limits follow."""
    if name is not None:
        text_check(name, param="metadata.name", code="invalid_name", min_length=0, max_length=255)
    specs = models_parse(models) if models is not None else None
    group = _group_locked(workspace=workspace, group_id=group_id)
    before = group_snapshot(group)
    if specs is not None:
        _slugs_live_check(workspace=workspace, specs=specs, param="models")
        _ancestors_fit(
            specs=specs,
            group_id=group.id,
            mode=group.limit_enforcement,
            ancestors=group_chain(group=group)[:-1],
        )
        _descendants_fit(specs=specs, group=group)
        _models_write(group, specs)
    if name is not None:
        group.name = name
    group.save(update_fields=["name", "updated_at"])
    audit_record(
        actor=actor,
        action="group.update",
        obj_type="group",
        obj_id=group.id,
        workspace_id=workspace.id,
        before=before,
        after=group_snapshot(group),
    )
    config_changed(workspace_id=workspace.id)
    return group


@transaction.atomic
def group_delete(*, workspace: Workspace, group_id: str, actor: str) -> Group:
    """Soft-delete the group and its live descendants, revoke their keys, free the external ids."""
    group = _group_locked(workspace=workspace, group_id=group_id)
    doomed = [group, *group_subtree(group=group)]
    befores = {member.id: group_snapshot(member) for member in doomed}
    now = timezone.now()
    Group.objects.filter(pk__in=befores).update(deleted_at=now, updated_at=now)
    # keys depend on groups, never the reverse: reach ApiKey through the reverse relation.
    live_keys = Group.api_keys.field.model._default_manager.filter(
        group_id__in=befores, revoked_at__isnull=True
    )
    revoked = sorted(live_keys.values_list("prefix", flat=True))
    live_keys.update(revoked_at=now)
    for member in doomed:
        member.deleted_at = now
        audit_record(
            actor=actor,
            action="group.delete",
            obj_type="group",
            obj_id=member.id,
            workspace_id=workspace.id,
            before=befores[member.id],
            after={**befores[member.id], "deleted_at": now.isoformat(), "deleted_with": group.id},
        )
    audit_record(
        actor=actor,
        action="api_key.revoke_subtree",
        obj_type="group",
        obj_id=group.id,
        workspace_id=workspace.id,
        after={"revoked_key_prefixes": revoked},
    )
    config_changed(workspace_id=workspace.id)
    return group


@transaction.atomic
def group_models_rename_slug(*, workspace_id: str, old_slug: str, new_slug: str) -> None:
    """Follow an endpoint rename in every group access and legacy key subset of the workspace."""
    GroupModel.objects.filter(group__workspace_id=workspace_id, slug=old_slug).update(slug=new_slug)
    keys = Group.api_keys.field.model._default_manager.filter(
        workspace_id=workspace_id, slugs__isnull=False
    )
    key: Any  # a keys.ApiKey, typed loosely: groups never imports keys
    for key in keys:
        if old_slug in key.slugs:
            key.slugs = [new_slug if slug == old_slug else slug for slug in key.slugs]
            key.save(update_fields=["slugs"])
