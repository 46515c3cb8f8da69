"""Inserts compiled once per process write the rows `bulk_create` writes, keys and state set."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.db.models.signals import post_save, pre_save

from gateway_project.kernel.compiled import CompiledInsert
from groups.models import AuditEvent, Group, GroupModel, ModelLimit, Workspace
from keys.models import ApiKey


def _group(workspace: Workspace, external_id: str) -> Group:
    group = Group(workspace=workspace, external_entity_id=external_id)
    group.root_id = group.id
    return group


def _row(model, pk) -> dict:
    return {k: v for k, v in model.objects.filter(pk=pk).values().get().items() if k != "id"}


def test_rows_are_the_rows_bulk_create_writes_for_each_row_count(workspace):
    group = _group(workspace, "a")
    CompiledInsert(Group).insert([group])
    insert: CompiledInsert[GroupModel] = CompiledInsert(GroupModel)

    mine = [GroupModel(group=group, slug=f"acme/m{i}", position=i) for i in range(3)]
    insert.insert(mine[:1])
    insert.insert(mine[1:])
    theirs = GroupModel.objects.bulk_create(
        [GroupModel(group=group, slug=f"acme/o{i}", position=i) for i in range(3)]
    )

    assert all(access.pk and not access._state.adding for access in mine)
    assert [access._state.db for access in mine] == ["default"] * 3
    assert [_row(GroupModel, access.pk) for access in mine] == [
        {**_row(GroupModel, access.pk), "slug": f"acme/m{i}"} for i, access in enumerate(theirs)
    ]
    assert Group.objects.get(pk=group.pk).created_at == group.created_at


def test_json_and_auto_timestamps_are_written_as_the_orm_writes_them(workspace):
    event = AuditEvent(
        actor="system", action="a", object_type="group", object_id="x", after={"k": [1, None]}
    )

    CompiledInsert(AuditEvent).insert([event])

    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.after == {"k": [1, None]} and stored.before is None
    assert stored.created_at == event.created_at is not None


def test_nothing_to_insert_runs_no_statement(db, django_assert_num_queries):
    with django_assert_num_queries(0):
        CompiledInsert(ModelLimit).insert([])


def test_a_unique_violation_raises_and_marks_the_transaction_for_rollback(workspace):
    CompiledInsert(Group).insert([_group(workspace, "a")])

    with pytest.raises(IntegrityError):
        with transaction.atomic():
            CompiledInsert(Group).insert([_group(workspace, "a")])
            pytest.fail("the insert raised")

    assert Group.objects.filter(external_entity_id="a").count() == 1


def test_models_inserted_without_signals_have_no_save_receivers():
    models = (Group, GroupModel, ModelLimit, AuditEvent, ApiKey)

    receivers = [
        (signal, model)
        for model in models
        for signal in (pre_save, post_save)
        if signal.has_listeners(model)
    ]

    assert receivers == []
