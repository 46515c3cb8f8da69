"""Reads compiled once per process give what their queryset gives, with each call's values."""

from __future__ import annotations

import psycopg
import pytest
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

from gateway_project.kernel.compiled import CompiledRead
from gateway_project.postgres.prepared import PreparingCursor
from groups.models import AuditEvent, Group, Workspace

preparing = pytest.mark.skipif(
    "prepare_threshold" not in connection.settings_dict["OPTIONS"],
    reason="PostgreSQL with the pool and GATEWAY_DB_PREPARE prepares",
)


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


def _plans(part: str) -> int:
    """How many times this session ran its prepared statements whose text holds `part`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sum(generic_plans + custom_plans) FROM pg_prepared_statements"
            " WHERE NOT from_sql AND strpos(statement, %s) > 0",
            [part],
        )
        return int(cursor.fetchone()[0] or 0)


@pytest.fixture
def session_preparing():
    """The pooled connection prepares again after a test that made it stop."""
    yield
    if connection.connection is not None:
        connection.connection.prepare_threshold = 5


@preparing
def test_a_read_is_prepared_on_the_session_and_its_queries_are_still_captured(workspace):
    group = _group(workspace, "a")
    read: CompiledRead[Group] = CompiledRead(_live)

    with CaptureQueriesContext(connection) as queries:
        first = read.objects(workspace_id=workspace.id, legacy=False)
        second = read.objects(workspace_id=workspace.id, legacy=False)
    with CaptureQueriesContext(connection) as orm:
        list(_live(workspace.id, False))

    assert [g.pk for g in first] == [g.pk for g in second] == [group.pk]
    assert [query["sql"] for query in queries] == [orm[0]["sql"]] * 2
    assert _plans('"workspace_id" = $1') == 2


@preparing
@pytest.mark.django_db(transaction=True)
def test_a_read_answers_on_a_session_that_lost_its_statements(workspace, session_preparing):
    group = _group(workspace, "a")
    read: CompiledRead[Group] = CompiledRead(_live)
    read.objects(workspace_id=workspace.id, legacy=False)

    # As a pooler lending another server session would: psycopg does not see it.
    connection.connection.pgconn.exec_(b"DEALLOCATE ALL")
    again = read.objects(workspace_id=workspace.id, legacy=False)

    assert [g.pk for g in again] == [group.pk]
    assert connection.connection.prepare_threshold is None
    assert [g.pk for g in read.objects(workspace_id=workspace.id, legacy=False)] == [group.pk]


@preparing
@pytest.mark.django_db(transaction=True)
def test_a_statement_lost_inside_a_transaction_fails_it_and_the_next_read_answers(
    workspace, session_preparing
):
    group = _group(workspace, "a")
    read: CompiledRead[Group] = CompiledRead(_live)
    read.objects(workspace_id=workspace.id, legacy=False)
    connection.connection.pgconn.exec_(b"DEALLOCATE ALL")

    with pytest.raises(DatabaseError), transaction.atomic():
        read.objects(workspace_id=workspace.id, legacy=False)

    assert [g.pk for g in read.objects(workspace_id=workspace.id, legacy=False)] == [group.pk]


@preparing
@pytest.mark.django_db
def test_a_session_holding_another_clients_statement_of_that_name_still_answers():
    conn = psycopg.connect(connection.connection.info.dsn, prepare_threshold=5, autocommit=True)
    with conn:
        conn.pgconn.exec_(b"PREPARE _pg3_0 AS SELECT 1")  # psycopg's name for its first one

        with PreparingCursor(conn) as cursor:
            row = cursor.execute("SELECT %s::int + 1", [41]).fetchone()

        assert row == (42,)
        assert conn.prepare_threshold is None
