"""Many groups in one call, all or nothing: a lab's backend syncs its customers in bulk.

Each item is checked by the rules of a single create (groups/services/hierarchy.py) with the
lookups done once for the whole batch: parents and their chains, live slugs, taken external ids.
Then one INSERT per table and one audit row per group, as single creates would have written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from django.db import IntegrityError, transaction

from gateway_project.kernel.errors import ValidationFailed, item_errors
from gateway_project.kernel.pagination import BATCH_MAX
from groups.limits import GroupLimits, ModelSpec, models_parse, specs_wire
from groups.models import Group, GroupModel, ModelLimit, Workspace
from groups.selectors import group_chains, group_limits
from groups.services.audit import audit_event, audit_records
from groups.services.hierarchy import group_snapshot
from groups.services.hierarchy_rules import (
    SlugsKnown,
    ancestors_fit,
    mode_resolve,
    models_required,
    parent_resolve,
    slugs_known,
    slugs_live_check,
)
from groups.services.tenants import text_check

ID_PARAM = "metadata.external_entity_id"


@dataclass(frozen=True)
class CreatedGroup:
    """A group a batch created, with the configured limits of its chain (root first, its own
    last) so its GroupV1 needs no further query."""

    group: Group
    chain: list[GroupLimits]

    @property
    def own(self) -> GroupLimits:
        return self.chain[-1]


def batch_size_check(items: Any, *, param: str) -> None:
    """A list of 1..1,000 items, checked before any of them is."""
    if not isinstance(items, list) or not 1 <= len(items) <= BATCH_MAX:
        raise ValidationFailed(
            f"{param} must be a list of 1..{BATCH_MAX} items", code="invalid_batch", param=param
        )


@dataclass
class _Context:
    """What every item of one batch is checked against, looked up once."""

    workspace: Workspace
    parents: dict[str, Group]
    chains: dict[str, list[Group]]
    known: SlugsKnown
    specs: dict[int, list[ModelSpec]]
    taken: set[str]
    seen: dict[str, int]


def _specs_parsed(items: Sequence[Mapping[str, Any]]) -> dict[int, list[ModelSpec]]:
    """The specs of every item whose models parse, by index (the others fail their own check)."""
    parsed: dict[int, list[ModelSpec]] = {}
    for index, item in enumerate(items):
        try:
            parsed[index] = models_parse(item["models"])
        except ValidationFailed:
            continue
    return parsed


def _parents_locked(workspace: Workspace, parent_ids: set[str]) -> list[Group]:
    """The live parents named by the batch, read once their trees are locked."""
    live = Group.objects.filter(workspace=workspace, pk__in=parent_ids, deleted_at__isnull=True)
    roots = sorted({row.root_id or row.id for row in live})
    # Every tree in one order, so two batches sharing trees cannot deadlock (see tree_lock).
    list(Group.objects.select_for_update().filter(pk__in=roots).order_by("pk").values_list("pk"))
    return list(live.all())


def _context(workspace: Workspace, items: Sequence[Mapping[str, Any]]) -> _Context:
    parent_ids = {pid for item in items if isinstance(pid := item["parent_group_id"], str)}
    parents = _parents_locked(workspace, parent_ids)
    specs = _specs_parsed(items)
    ids = [item["external_entity_id"] for item in items]
    taken = Group.objects.filter(
        workspace=workspace,
        external_entity_id__in=[value for value in ids if isinstance(value, str)],
        deleted_at__isnull=True,
    ).values_list("external_entity_id", flat=True)
    return _Context(
        workspace=workspace,
        parents={parent.id: parent for parent in parents},
        chains=group_chains(groups=parents),
        known=slugs_known(workspace=workspace, specs=chain.from_iterable(specs.values())),
        specs=specs,
        taken=set(taken),
        seen={},
    )


def _external_id(context: _Context, value: Any, index: int) -> str:
    external_id = text_check(
        value, param=ID_PARAM, code="invalid_external_entity_id", min_length=1, max_length=255
    )
    if external_id in context.taken:
        raise ValidationFailed(
            f"external_entity_id {external_id!r} is taken", code="external_id_taken", param=ID_PARAM
        )
    first = context.seen.setdefault(external_id, index)
    if first != index:
        raise ValidationFailed(
            f"external_entity_id {external_id!r} is also given by groups[{first}]",
            code="duplicate_external_id",
            param=ID_PARAM,
        )
    return external_id


def _draft(context: _Context, item: Mapping[str, Any], index: int) -> CreatedGroup:
    name = item["name"]
    text_check(name, param="metadata.name", code="invalid_name", min_length=0, max_length=255)
    text_check(
        item["external_entity_id"],
        param=ID_PARAM,
        code="invalid_external_entity_id",
        min_length=1,
        max_length=255,
    )
    specs = context.specs.get(index) or models_parse(item["models"])
    models_required(specs)
    parent = parent_resolve(
        workspace=context.workspace, parent_group_id=item["parent_group_id"], found=context.parents
    )
    mode = mode_resolve(item["limit_enforcement"], parent)
    slugs_live_check(workspace=context.workspace, specs=specs, param="models", known=context.known)
    group = Group(workspace=context.workspace, parent=parent, name=name, limit_enforcement=mode)
    group.root_id = (parent.root_id or parent.id) if parent is not None else group.id
    group.depth = parent.depth + 1 if parent is not None else 1
    ancestors = context.chains[parent.id] if parent is not None else []
    ancestors_fit(specs=specs, group_id=group.id, mode=mode, ancestors=ancestors)
    group.external_entity_id = _external_id(context, item["external_entity_id"], index)
    own = GroupLimits(group_id=group.id, models={spec.slug: spec.limits for spec in specs})
    return CreatedGroup(group=group, chain=[*(group_limits(group=a) for a in ancestors), own])


def _insert(workspace: Workspace, actor: str, created: list[CreatedGroup]) -> None:
    groups = [entry.group for entry in created]
    try:
        with transaction.atomic():
            Group.objects.bulk_create(groups)
    except IntegrityError as exc:  # a concurrent create took one of the external ids
        raise ValidationFailed(
            "an external_entity_id of this batch was taken meanwhile; nothing was created",
            code="external_id_taken",
            param="groups",
        ) from exc
    pairs: list[tuple[GroupModel, ModelSpec]] = [
        (GroupModel(group=entry.group, slug=slug, position=position), ModelSpec(slug, limits))
        for entry in created
        for position, (slug, limits) in enumerate(entry.own.models.items())
    ]
    GroupModel.objects.bulk_create([access for access, _spec in pairs])
    ModelLimit.objects.bulk_create(
        ModelLimit(
            access=access, kind=lim.kind, type=lim.type, unit=lim.unit, threshold=lim.threshold
        )
        for access, spec in pairs
        for lim in spec.limits
    )
    audit_records(
        audit_event(
            actor=actor,
            action="group.create",
            obj_type="group",
            obj_id=entry.group.id,
            workspace_id=workspace.id,
            after=group_snapshot(entry.group, models=specs_wire(entry.own.models)),
        )
        for entry in created
    )


@transaction.atomic
def group_create_many(
    *, workspace: Workspace, actor: str, items: Sequence[Mapping[str, Any]]
) -> list[CreatedGroup]:
    """Create 1..1,000 groups, each as `group_create` would, or none of them.

    Items carry group_create's parameters: external_entity_id, name, models, limit_enforcement,
    parent_group_id. An error names its item: `groups[3].models[0].slug`."""
    batch_size_check(list(items), param="groups")
    context = _context(workspace, items)
    created = []
    for index, item in enumerate(items):
        with item_errors(f"groups[{index}]"):
            created.append(_draft(context, item, index))
    _insert(workspace, actor, created)
    return created
