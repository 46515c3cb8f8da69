"""Reads compiled once per process give what their queryset gives, with each call's values."""

from __future__ import annotations

import pytest

from gateway_project.kernel.compiled import CompiledRead
from groups.models import AuditEvent, Group, Workspace


def _group(workspace: Workspace, external_id: str, **fields) -> Group:
    group = Group(workspace=workspace, external_entity_id=external_id, **fields)
    group.root_id = group.id
    group.save(force_insert=True)
    return group


def _loaded(group: Group) -> dict:
    """A loaded instance's fields and its state (where from, not new)."""
    fields = {name: value for name, value in vars(group).items() if name != "_state"}
    return {**fields, "db": group._state.db, "adding": group._state.adding}


def _live(workspace_id, legacy):
    return Group.objects.filter(
        workspace_id=workspace_id, deleted_at__isnull=True, is_legacy_user=legacy
    ).order_by("pk")


def test_objects_are_the_rows_of_the_queryset_for_each_calls_values(workspace, other_workspace):
    mine = [_group(workspace, "a"), _group(workspace, "b"), _group(workspace, "c", name="C")]
    _group(workspace, "u", is_legacy_user=True)
    theirs = _group(other_workspace, "a")
    read: CompiledRead[Group] = CompiledRead(_live)

    first = read.objects(workspace_id=workspace.id, legacy=False)
    second = read.objects(workspace_id=other_workspace.id, legacy=False)

    expected = list(_live(workspace.id, False))
    assert [group.pk for group in first] == [group.pk for group in mine]
    assert [_loaded(group) for group in first] == [_loaded(group) for group in expected]
    assert [group.pk for group in second] == [theirs.pk]
    assert [g.pk for g in read.objects(workspace_id=workspace.id, legacy=True)] == [
        Group.objects.get(external_entity_id="u").pk
    ]


def test_a_list_parameter_reads_every_length_and_values_convert_as_the_orm_converts(workspace):
    event = AuditEvent.objects.create(
        actor="system", action="a", object_type="group", object_id="x", after={"k": [1, 2]}
    )
    AuditEvent.objects.create(actor="system", action="b", object_type="group", object_id="y")
    read: CompiledRead[AuditEvent] = CompiledRead(
        lambda ids: (
            AuditEvent.objects.filter(object_id__in=ids)
            .order_by("object_id")
            .values_list("object_id", "after", "created_at")
        )
    )

    one = read.rows(ids=["x"])
    two = read.rows(ids=["y", "x", "z"])

    assert one == [("x", {"k": [1, 2]}, event.created_at)]
    assert [row[0] for row in two] == ["x", "y"]
    assert read.rows(ids=["nothing"]) == []
    assert read.rows(ids=[]) == []


@pytest.mark.django_db
def test_a_value_the_sql_does_not_take_as_a_parameter_is_refused():
    read: CompiledRead[Group] = CompiledRead(
        lambda name: Group.objects.filter(name__icontains=name)
    )

    with pytest.raises(ValueError, match="parameters"):
        read.objects(name="x")
