"""Reads of groups: lookups, configured models, chains, effective and enforced limits.

`ModelConfigOutSerializer` is the schema of one item of `group_models`, for other apps' wire shapes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Prefetch, Q, QuerySet

from gateway_project.kernel.compiled import CompiledRead
from gateway_project.kernel.errors import NotFound
from gateway_project.kernel.pagination import rows_after
from groups.limit_serializers import ModelConfigOutSerializer
from groups.limits import (
    EnforcedLimit,
    GroupLimits,
    LimitSpec,
    effective_limits,
    effective_wire,
    enforced_limits,
    specs_wire,
)
from groups.models import AuditEvent, Group, GroupModel, ModelLimit, Workspace

__all__ = [
    "EnforcedLimit",
    "ModelConfigOutSerializer",
    "audit_of_customer",
    "audit_search",
    "group_chain",
    "group_chains",
    "group_effective_models",
    "group_enforced_limits",
    "group_get",
    "group_limits",
    "group_list",
    "group_page",
    "group_models",
    "group_subtree",
    "groups_effective_models",
    "groups_limits",
    "groups_models_wire",
    "slug_spend_limited",
    "models_prefetch",
]

# A chain has at most 5 groups: a parent plus its 3 ancestors come in one query.
_ANCESTORS = "parent__parent__parent"


def models_prefetch() -> Prefetch[Any]:
    """Prefetch a group's model access and limits in configured order (2 queries per batch)."""
    limits = Prefetch("limits", queryset=ModelLimit.objects.order_by("id"))
    access = GroupModel.objects.order_by("position", "id").prefetch_related(limits)
    return Prefetch("model_access", queryset=access)


def models_cache_fill(group: Group, accesses: list[tuple[GroupModel, list[ModelLimit]]]) -> None:
    """Hand the model access rows just written to the reads below, as `models_prefetch` would
    have loaded them (rows in configured order), so a write does not read them back."""
    for access, limits in accesses:
        _cache_fill(access, "limits", limits)
    _cache_fill(group, "model_access", [access for access, _limits in accesses])
    group._prefetched_objects_cache.pop(_LIMITS_READ, None)  # type: ignore[attr-defined]


def _cache_fill(row: Group | GroupModel, name: str, rows: list[Any]) -> None:
    cached = getattr(row, name).all()
    cached._result_cache, cached._prefetch_done = rows, True
    caches: dict[str, Any] = getattr(row, "_prefetched_objects_cache", {})
    caches[name] = cached
    row._prefetched_objects_cache = caches  # type: ignore[union-attr]


def _live(workspace: Workspace | str, legacy: bool | None) -> QuerySet[Group]:
    groups = Group.objects.filter(workspace=workspace, deleted_at__isnull=True)
    return groups if legacy is None else groups.filter(is_legacy_user=legacy)


_GROUP_COLUMNS = tuple(field.attname for field in Group._meta.concrete_fields)
_PK = _GROUP_COLUMNS.index("id")
_MODEL_COLUMNS = (
    "model_access__slug",
    "model_access__limits__kind",
    "model_access__limits__type",
    "model_access__limits__unit",
    "model_access__limits__threshold",
)


def _with_models(groups: QuerySet[Group]) -> QuerySet[Any]:
    """Each group's columns with its configured models, a row per limit, in configured order."""
    order = ("pk", "model_access__position", "model_access__id", "model_access__limits__id")
    return groups.order_by(*order).values_list(*_GROUP_COLUMNS, *_MODEL_COLUMNS)


def _spec_add(models: dict[str, list[LimitSpec]], slug: str, *limit: Any) -> None:
    limits = models.setdefault(slug, [])
    kind, type_, unit, threshold = limit
    if kind is not None:  # an access without limits comes as one row of NULLs
        limits.append(LimitSpec(kind=kind, type=type_, unit=unit, threshold=threshold))


def _groups_with_models(rows: list[tuple[Any, ...]]) -> list[Group]:
    """The groups of `_with_models` rows, each with its models kept as `group_limits` reads them."""
    found: dict[str, tuple[Group, dict[str, list[LimitSpec]]]] = {}
    width = len(_GROUP_COLUMNS)
    for row in rows:
        entry = found.get(row[_PK])
        if entry is None:
            group = Group.from_db("default", _GROUP_COLUMNS, row[:width])
            entry = found[group.id] = (group, {})
        if row[width] is not None:  # a group without models comes as one row of NULLs
            _spec_add(entry[1], *row[width:])
    for group, models in found.values():
        specs = {slug: tuple(limits) for slug, limits in models.items()}
        _limits_keep(group, GroupLimits(group_id=group.id, models=specs))
    return [group for group, _models in found.values()]


_GROUP_GET: CompiledRead[Group] = CompiledRead(
    lambda workspace_id, group_id, legacy: _with_models(
        _live(workspace_id, legacy).filter(pk=group_id)
    )
)


def group_get(*, workspace: Workspace, group_id: str, legacy: bool | None = None) -> Group:
    """A live group of the workspace with its configured models (one query), else NotFound."""
    rows = _GROUP_GET.rows(workspace_id=workspace.id, group_id=group_id, legacy=legacy)
    found = _groups_with_models(rows)
    if not found:
        noun = "user" if legacy else "group"
        raise NotFound(f"No {noun} with id {group_id!r}", code="not_found")
    return found[0]


def group_list(
    *,
    workspace: Workspace | str,
    external_entity_id: str | None = None,
    legacy: bool | None = None,
) -> QuerySet[Group]:
    """Live groups of the workspace in creation order (models: `groups_limits` reads a page's)."""
    groups = _live(workspace, legacy)
    if external_entity_id is not None:
        groups = groups.filter(external_entity_id=external_entity_id)
    return groups.order_by("created_at", "id")


_GROUP_PAGE: CompiledRead[Group] = CompiledRead(
    lambda workspace_id, external_entity_id, legacy, after, count: rows_after(
        group_list(workspace=workspace_id, external_entity_id=external_entity_id, legacy=legacy),
        after,
        count,
    )
)


# A live external id names one group at most: its lookup reads the group with its models.
_GROUP_OF_EXTERNAL_ID: CompiledRead[Group] = CompiledRead(
    lambda workspace_id, external_entity_id, legacy, after: _with_models(
        group_list(workspace=workspace_id, external_entity_id=external_entity_id, legacy=legacy)
        if after is None
        else group_list(
            workspace=workspace_id, external_entity_id=external_entity_id, legacy=legacy
        ).filter(pk__gt=after)
    )
)


def group_page(
    *,
    workspace: Workspace,
    after: str | None,
    count: int,
    external_entity_id: str | None = None,
    legacy: bool | None = None,
) -> list[Group]:
    """`count` groups of `group_list` in id order after the id `after` (a page's read); the
    group of an external id comes with its models (one query)."""
    if external_entity_id is not None:
        rows = _GROUP_OF_EXTERNAL_ID.rows(
            workspace_id=workspace.id,
            external_entity_id=external_entity_id,
            legacy=legacy,
            after=after,
        )
        return _groups_with_models(rows)[:count]
    return _GROUP_PAGE.objects(
        workspace_id=workspace.id,
        external_entity_id=external_entity_id,
        legacy=legacy,
        after=after,
        count=count,
    )


_LIMITS_OF: CompiledRead[GroupModel] = CompiledRead(
    lambda group_ids: (
        GroupModel.objects.filter(group_id__in=group_ids)
        .order_by("group_id", "position", "id", "limits__id")
        .values_list(
            "group_id", "slug", "limits__kind", "limits__type", "limits__unit", "limits__threshold"
        )
    )
)


def groups_limits(*, group_ids: Iterable[str]) -> dict[str, GroupLimits]:
    """Configured models of many groups by id, in configured order, read as tuples (one query)."""
    # Building model instances of every access and limit of a page cost more than the rest of it.
    found: dict[str, dict[str, list[LimitSpec]]] = {group_id: {} for group_id in group_ids}
    for group_id, slug, *limit in _LIMITS_OF.rows(group_ids=list(found)):
        _spec_add(found[group_id], slug, *limit)
    return {
        group_id: GroupLimits(
            group_id=group_id, models={slug: tuple(specs) for slug, specs in models.items()}
        )
        for group_id, models in found.items()
    }


def groups_models_wire(
    *, groups: list[Group]
) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """(models, effective models) in the wire shape of many groups by id, in two queries at most
    (the ancestors of the children, then the models of every member not read with it)."""
    chains = _chains(groups)
    members = [member for chain in chains.values() for member in chain]
    limits = {member.id: read for member in members if (read := _limits_read(member)) is not None}
    unread = [member.id for member in members if member.id not in limits]
    if unread:
        limits |= groups_limits(group_ids=unread)
    return {
        group.id: (
            specs_wire(limits[group.id].models),
            effective_wire(
                effective_limits(
                    chain=[limits[member.id] for member in chains[group.id]],
                    mode=group.limit_enforcement,
                )
            ),
        )
        for group in groups
    }


# What `groups_limits` read for a group instance, kept beside its prefetches so that whatever
# clears those (refresh_from_db, a write of its models) clears this too.
_LIMITS_READ = "gw_limits_read"


def _limits_read(group: Group) -> GroupLimits | None:
    read: GroupLimits | None = getattr(group, "_prefetched_objects_cache", {}).get(_LIMITS_READ)
    return read


def _limits_keep(group: Group, limits: GroupLimits) -> None:
    caches: dict[str, Any] = getattr(group, "_prefetched_objects_cache", {})
    caches[_LIMITS_READ] = limits
    group._prefetched_objects_cache = caches  # type: ignore[attr-defined]


def group_limits(*, group: Group) -> GroupLimits:
    """A group's configured models as specs (from the prefetch cache or an earlier read of this
    instance when present, else read as tuples in one query)."""
    if "model_access" not in getattr(group, "_prefetched_objects_cache", {}):
        read = _limits_read(group)
        if read is None:
            read = groups_limits(group_ids=[group.id])[group.id]
            _limits_keep(group, read)
        return read
    return GroupLimits(
        group_id=group.id,
        models={
            access.slug: tuple(
                LimitSpec(kind=lim.kind, type=lim.type, unit=lim.unit, threshold=lim.threshold)
                for lim in access.limits.all()
            )
            for access in group.model_access.all()
        },
    )


def slug_spend_limited(*, workspace_id: str, slug: str) -> bool:
    """True when a live group of the workspace has a SPEND limit on `slug`."""
    return ModelLimit.objects.filter(
        type="SPEND",
        access__slug=slug,
        access__group__workspace_id=workspace_id,
        access__group__deleted_at__isnull=True,
    ).exists()


def group_models(*, group: Group) -> list[dict[str, Any]]:
    """The group's configured models in the wire shape."""
    return specs_wire(group_limits(group=group).models)


def _chain_from(group: Group, parent: Group | None) -> list[Group]:
    chain = [group]
    node = parent
    while node is not None:
        chain.append(node)
        node = node.parent if node.parent_id is not None else None
    return list(reversed(chain))


def group_chain(*, group: Group) -> list[Group]:
    """The group's ancestors root first, the group last (at most one query)."""
    if group.parent_id is None:
        return [group]
    parent = Group.objects.select_related(_ANCESTORS).get(pk=group.parent_id)
    return _chain_from(group, parent)


def _chains(groups: list[Group]) -> dict[str, list[Group]]:
    parent_ids = {group.parent_id for group in groups if group.parent_id is not None}
    parents = Group.objects.select_related(_ANCESTORS).in_bulk(parent_ids) if parent_ids else {}
    return {
        group.id: _chain_from(group, parents.get(group.parent_id) if group.parent_id else None)
        for group in groups
    }


def group_chains(*, groups: list[Group]) -> dict[str, list[Group]]:
    """Each group's chain, root first, models read on every member (constant queries)."""
    chains = _chains(groups)
    unread = [
        member
        for chain in chains.values()
        for member in chain
        if "model_access" not in getattr(member, "_prefetched_objects_cache", {})
        and _limits_read(member) is None
    ]
    # An ancestor shared by several chains may come as several instances: each gets the read.
    read = groups_limits(group_ids=[member.id for member in unread]) if unread else {}
    for member in unread:
        _limits_keep(member, read[member.id])
    return chains


def groups_effective_models(*, groups: Iterable[Group]) -> dict[str, list[dict[str, Any]]]:
    """Effective models of many groups by id, in a constant number of queries."""
    chains = group_chains(groups=list(groups))
    return {
        group_id: effective_wire(
            effective_limits(
                chain=[group_limits(group=member) for member in chain],
                mode=chain[-1].limit_enforcement,
            )
        )
        for group_id, chain in chains.items()
    }


def group_effective_models(*, group: Group) -> list[dict[str, Any]]:
    """What the runtime enforces for the group, every limit with its `source_group`."""
    return groups_effective_models(groups=[group])[group.id]


def group_enforced_limits(*, group: Group) -> dict[str, list[EnforcedLimit]]:
    """Per slug, the counters a request of this group must fit."""
    chain = group_chains(groups=[group])[group.id]
    return enforced_limits(
        chain=[group_limits(group=member) for member in chain],
        mode=group.limit_enforcement,
        root_group_id=group.root_id or group.id,
    )


def group_subtree(*, group: Group) -> list[Group]:
    """The group's live descendants, parents before children (one query)."""
    candidates = Group.objects.filter(
        root_id=group.root_id or group.id, depth__gt=group.depth, deleted_at__isnull=True
    ).order_by("depth", "id")
    inside = {group.id}
    subtree: list[Group] = []
    for candidate in candidates:
        if candidate.parent_id in inside:
            inside.add(candidate.id)
            subtree.append(candidate)
    return subtree


def audit_of_customer(*, group_ids: list[str], key_ids: list[str], limit: int = 50) -> list[Any]:
    """The newest audit rows of these groups and keys (support's customer page)."""
    rows = AuditEvent.objects.filter(
        Q(object_type="group", object_id__in=group_ids)
        | Q(object_type="api_key", object_id__in=key_ids)
    )
    return list(rows.order_by("-created_at", "-id")[:limit])


def audit_search(*, term: str) -> Q:
    """Audit rows about `term`: an object id, the start of an actor, a key prefix, or a group's
    external id (the group's rows and its keys' rows); every branch is served by an index."""
    groups = list(Group.objects.filter(external_entity_id=term).values_list("id", flat=True)[:100])
    found = (
        Q(object_id=term)
        | Q(actor__startswith=term)
        | Q(after__prefix=term)
        | Q(before__prefix=term)
        | Q(after__external_entity_id=term)
        | Q(before__external_entity_id=term)
    )
    if groups:
        found |= Q(object_id__in=groups) | Q(after__group_id__in=groups)
    return found
