"""The rules every write of a group keeps: its tree locked, a valid parent and mode, live slugs,
models within its ancestors' and above its descendants' (CASCADING ceilings), a free external id.

The API and the admin both reach these through the services of groups/services/hierarchy.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import F, Q, prefetch_related_objects

from gateway_project.kernel.errors import ValidationFailed
from groups.limits import (
    CASCADING,
    INDEPENDENT,
    SPEND,
    GroupLimits,
    ModelSpec,
    ceiling_violation,
    limit_param,
)
from groups.models import Group, Workspace
from groups.ports import ports
from groups.selectors import group_get, group_limits, group_subtree, models_prefetch

MAX_DEPTH = 5


def models_required(specs: list[ModelSpec], *, param: str = "models") -> list[ModelSpec]:
    """The specs, unless empty (creation needs at least one model)."""
    if not specs:
        raise ValidationFailed("models must not be empty", code="models_required", param=param)
    return specs


@dataclass(frozen=True)
class SlugsKnown:
    """Which of the slugs some specs name are live (and priced) endpoints of the workspace."""

    live: set[str]
    priced: set[str]


def slugs_known(*, workspace: Workspace, specs: Iterable[ModelSpec]) -> SlugsKnown:
    """Look up the specs' slugs (one query, two with SPEND limits), for `slugs_live_check`."""
    specs = list(specs)
    live = ports().live_endpoint_slugs(
        workspace_id=workspace.id, slugs={spec.slug for spec in specs}
    )
    spending = {spec.slug for spec in specs if any(lim.type == SPEND for lim in spec.limits)}
    lookup = ports().priced_endpoint_slugs
    priced = (
        set()
        if lookup is None or not spending
        else lookup(workspace_id=workspace.id, slugs=spending)
    )
    return SlugsKnown(live=live, priced=priced)


def slugs_live_check(
    *,
    workspace: Workspace,
    specs: Sequence[ModelSpec],
    param: str,
    known: SlugsKnown | None = None,
) -> None:
    """Every spec names a live endpoint of the workspace, else ValidationFailed `unknown_slug`;
    a SPEND limit needs a priced endpoint, else `spend_limit_unpriced`."""
    known = known or slugs_known(workspace=workspace, specs=specs)
    for index, spec in enumerate(specs):
        if spec.slug not in known.live:
            raise ValidationFailed(
                f"{spec.slug} is not a live endpoint of this workspace: create it first with "
                "POST /v1/gateway/endpoints (or have the gateway's staff create it in the admin), "
                "then list it here.",
                code="unknown_slug",
                param=f"{param}[{index}].slug",
            )
    for index, spec in enumerate(specs):
        spends = any(lim.type == SPEND for lim in spec.limits)
        if spends and spec.slug not in known.priced:
            raise ValidationFailed(
                f"{spec.slug} has no pricing: a SPEND limit counts money, so set the endpoint's "
                "pricing first (PATCH /v1/gateway/endpoints/{id}).",
                code="spend_limit_unpriced",
                param=f"{param}[{index}].usage_limits",
            )


def tree_lock(group: Group) -> None:
    """Lock the root row of the group's tree for the rest of the transaction."""
    # Every edit of a tree locks its root row, so concurrent edits of a parent and a child cannot
    # each pass the subset/ceiling checks against the other's old state.
    root_id = group.root_id or group.id
    Group.objects.select_for_update().filter(pk=root_id).values_list("pk", flat=True).first()


def group_locked(*, workspace: Workspace, group_id: str, seen: Group | None = None) -> Group:
    """The live group, re-read once its tree is locked (it may have been deleted meanwhile).

    `seen`: the group as the caller read it before the lock, which names its root (a group never
    changes trees). A root is its tree's lock row, so locking it and re-reading it is one query."""
    if seen is None:
        # A root is its tree's lock row: the read that finds it can lock it. A child's tree is
        # locked at its root first (below), so this read neither locks nor returns a child.
        root = (
            Group.objects.select_for_update()
            .filter(Q(root_id=F("id")) | Q(root_id__isnull=True))
            .filter(workspace=workspace, pk=group_id, deleted_at__isnull=True)
            .first()
        )
        if root is not None:
            return root
        seen = group_get(workspace=workspace, group_id=group_id)
    if (seen.root_id or seen.id) != seen.id:
        tree_lock(seen)
        return group_get(workspace=workspace, group_id=group_id)
    # FOR UPDATE re-checks the filter on the row it waited for, so a delete committed meanwhile
    # leaves nothing to return.
    locked = Group.objects.select_for_update().filter(
        workspace=workspace, pk=group_id, deleted_at__isnull=True
    )
    group = locked.first()
    if group is None:
        return group_get(workspace=workspace, group_id=group_id)  # raises NotFound
    return group


def parent_resolve(
    *, workspace: Workspace, parent_group_id: Any, found: Mapping[str, Group] | None = None
) -> Group | None:
    """The live parent group named by the body (None for a root), checked it may take a child.

    `found`: the workspace's live groups already read by id (a batch reads its parents once)."""
    if parent_group_id is None:
        return None
    parent = None
    if isinstance(parent_group_id, str) and found is not None:
        parent = found.get(parent_group_id)
    elif isinstance(parent_group_id, str):
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


def mode_resolve(limit_enforcement: Any, parent: Group | None) -> str:
    """The limit_enforcement of a new group: as asked for a root, the parent's for a child."""
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


def ancestors_fit(
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


def descendants_fit(*, specs: list[ModelSpec], group: Group) -> None:
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
