"""Writes of the customer hierarchy: groups, their models and limits (users build on these).

Every service checks the hierarchy rules itself (hierarchy_rules.py; the API and the admin both call
it), runs in one transaction, writes an audit row and announces data-plane changes with
`config_changed`. Keys follow deleted groups and renamed endpoints through groups/ports.py.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from gateway_project.kernel.compiled import CompiledInsert
from gateway_project.kernel.errors import ValidationFailed
from gateway_project.kernel.invalidation import config_changed
from groups.limits import ModelSpec, models_parse
from groups.models import Group, GroupModel, ModelLimit, Workspace
from groups.ports import ports
from groups.selectors import group_chain, group_models, group_subtree, models_cache_fill
from groups.services.audit import audit_record
from groups.services.hierarchy_rules import (
    ancestors_fit,
    descendants_fit,
    group_locked,
    mode_resolve,
    models_required,
    parent_resolve,
    slugs_live_check,
    tree_lock,
)
from groups.services.tenants import text_check


def group_snapshot(group: Group, *, models: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The audited state of a group, models included (read unless given in the wire shape)."""
    return {
        "id": group.id,
        "name": group.name,
        "external_entity_id": group.external_entity_id,
        "parent_group_id": group.parent_id,
        "limit_enforcement": group.limit_enforcement,
        "is_legacy_user": group.is_legacy_user,
        "models": group_models(group=group) if models is None else models,
        "deleted_at": group.deleted_at.isoformat() if group.deleted_at else None,
    }


_GROUP_INSERT = CompiledInsert(Group)
_MODEL_INSERT = CompiledInsert(GroupModel)
_LIMIT_INSERT = CompiledInsert(ModelLimit)


def _models_clear(group: Group) -> None:
    """Delete the group's models and their limits in two statements, the limits first (the
    deletion collector would read the models before deleting either)."""
    ModelLimit.objects.filter(access__group=group).delete()
    models = GroupModel.objects.filter(group=group)
    models._raw_delete(models.db)


def _models_write(group: Group, specs: list[ModelSpec], *, replace: bool = True) -> None:
    if replace:
        _models_clear(group)
    accesses = [
        GroupModel(group=group, slug=spec.slug, position=index) for index, spec in enumerate(specs)
    ]
    _MODEL_INSERT.insert(accesses)
    written = [
        (
            access,
            [
                ModelLimit(
                    access=access,
                    kind=lim.kind,
                    type=lim.type,
                    unit=lim.unit,
                    threshold=lim.threshold,
                )
                for lim in spec.limits
            ],
        )
        for access, spec in zip(accesses, specs, strict=True)
    ]
    _LIMIT_INSERT.insert([limit for _access, limits in written for limit in limits])
    models_cache_fill(group, written)


def group_row_insert(group: Group, *, param: str) -> None:
    """Insert the group's row; losing the race for its external id is `external_id_taken`.

    No savepoint of its own (two round trips a create): the error leaves the caller's transaction,
    which every caller rolls back."""
    try:
        with transaction.atomic(savepoint=False):
            _GROUP_INSERT.insert([group])
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
    parent = parent_resolve(workspace=workspace, parent_group_id=parent_group_id)
    if parent is not None:
        tree_lock(parent)
        parent = parent_resolve(workspace=workspace, parent_group_id=parent_group_id)
    mode = mode_resolve(limit_enforcement, parent)
    slugs_live_check(workspace=workspace, specs=specs, param="models")
    group = Group(
        workspace=workspace,
        parent=parent,
        name=name,
        limit_enforcement=mode,
        is_legacy_user=is_legacy_user,
    )
    group.root_id = (parent.root_id or parent.id) if parent is not None else group.id
    group.depth = parent.depth + 1 if parent is not None else 1
    ancestors_fit(
        specs=specs,
        group_id=group.id,
        mode=mode,
        ancestors=group_chain(group=parent) if parent else [],
    )
    group.external_entity_id = external_entity_id
    # A live group holding the external id fails the insert (a partial unique index), even one
    # committed by a concurrent create meanwhile.
    group_row_insert(group, param=id_param)
    _models_write(group, specs, replace=False)
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
    seen: Group | None = None,
) -> Group:
    """Rename a group and/or replace its models set; descendants' effective limits follow.

    `seen`: the group as the caller already read it (saves a read; it is re-read under the lock)."""
    if name is not None:
        text_check(name, param="metadata.name", code="invalid_name", min_length=0, max_length=255)
    specs = models_parse(models) if models is not None else None
    group = group_locked(workspace=workspace, group_id=group_id, seen=seen)
    before = group_snapshot(group)
    if specs is not None:
        slugs_live_check(workspace=workspace, specs=specs, param="models")
        ancestors_fit(
            specs=specs,
            group_id=group.id,
            mode=group.limit_enforcement,
            ancestors=group_chain(group=group)[:-1],
        )
        descendants_fit(specs=specs, group=group)
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
        # A rename leaves the models as `before` read them.
        after=group_snapshot(group, models=before["models"] if specs is None else None),
    )
    config_changed(workspace_id=workspace.id)
    return group


@transaction.atomic
def group_delete(*, workspace: Workspace, group_id: str, actor: str) -> Group:
    """Soft-delete the group and its live descendants, revoke their keys, free the external ids."""
    group = group_locked(workspace=workspace, group_id=group_id)
    doomed = [group, *group_subtree(group=group)]
    befores = {member.id: group_snapshot(member) for member in doomed}
    now = timezone.now()
    Group.objects.filter(pk__in=befores).update(deleted_at=now, updated_at=now)
    revoked = ports().group_keys_revoke(group_ids=list(befores), at=now)
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
    ports().key_slugs_rename(workspace_id=workspace_id, old_slug=old_slug, new_slug=new_slug)
