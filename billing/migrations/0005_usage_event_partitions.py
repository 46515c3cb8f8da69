"""Usage events partitioned by day on PostgreSQL (billing/services/partitions.py).

PostgreSQL: a partitioned copy of the table is built (a partition for each day the events have,
the days around today and a default one), every row is copied into it, and it takes the table's
name, all in this migration's transaction. Its primary key is (idempotency_key, timestamp) and
(request_id, timestamp) is unique: a partitioned table's unique keys must hold the partition key.
The other indexes are the table's own, as partitioned indexes; the foreign keys' single-column
indexes and the pattern-matching copies Django made of the text keys are not rebuilt (nothing
reads them: the composite indexes lead with the foreign keys, and searches are exact).

SQLite keeps one plain table, changed as the model says.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django.db.models.deletion
from django.db import migrations, models
from django.db.migrations.operations.base import Operation

from billing.services.partitions import (
    DEFAULT_PARTITION,
    TABLE,
    partition_create,
    partitions_ensure,
)

OLD = f"{TABLE}_unpartitioned"
NEW = f"{TABLE}_partitioned"
# The table's indexes, as they were and stay (name: columns and predicate).
INDEXES = {
    "billing_usa_workspa_e39f1b_idx": '(workspace_id, "timestamp", idempotency_key)',
    "usage_event_unbatched": "(workspace_id, created_at) WHERE batched_at IS NULL",
    "billing_usa_group_i_34c609_idx": '(group_id, "timestamp")',
    "usage_event_quarantined": "(quarantined_at) WHERE quarantined_at IS NOT NULL",
    "usage_event_batch": "(batch) WHERE NOT (batch = '')",
}
FOREIGN_KEYS = {
    "billing_usageevent_group_id_b5fdf7ac_fk_groups_group_id": "(group_id) REFERENCES groups_group",
    "billing_usageevent_workspace_id_b69f913a_fk_groups_workspace_id": (
        "(workspace_id) REFERENCES groups_workspace"
    ),
}


def _keys_and_indexes(schema_editor: Any, *, partitioned: bool) -> None:
    run = schema_editor.execute
    key = '(idempotency_key, "timestamp")' if partitioned else "(idempotency_key)"
    run(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY {key}")
    if partitioned:
        run(
            f"ALTER TABLE {TABLE} ADD CONSTRAINT usage_event_request_unique "
            'UNIQUE (request_id, "timestamp")'
        )
    else:
        run(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_request_id_key UNIQUE (request_id)")
        run(f"CREATE INDEX {TABLE}_group_id_b5fdf7ac ON {TABLE} (group_id)")
        run(f"CREATE INDEX {TABLE}_workspace_id_b69f913a ON {TABLE} (workspace_id)")
    for name, target in INDEXES.items():
        if partitioned or name != "usage_event_batch":
            run(f"CREATE INDEX {name} ON {TABLE} {target}")
    for name, target in FOREIGN_KEYS.items():
        run(
            f"ALTER TABLE {TABLE} ADD CONSTRAINT {name} FOREIGN KEY {target} (id) "
            "DEFERRABLE INITIALLY DEFERRED"
        )


def _partition(apps: Any, schema_editor: Any) -> None:
    run = schema_editor.execute
    run(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
    run(
        f"CREATE TABLE {NEW} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
        'PARTITION BY RANGE ("timestamp")'
    )
    run(f"ALTER TABLE {TABLE} RENAME TO {OLD}")
    run(f"ALTER TABLE {NEW} RENAME TO {TABLE}")
    run(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF {TABLE} DEFAULT")
    # Each day the events have gets its partition before the copy (none moves twice).
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT (\"timestamp\" AT TIME ZONE 'UTC')::date FROM {OLD}")
        days = [row[0] for row in cursor.fetchall()]
    for day in days:
        partition_create(day)
    partitions_ensure(today=datetime.now(UTC).date())
    run(f"INSERT INTO {TABLE} SELECT * FROM {OLD}")
    run(f"DROP TABLE {OLD}")
    _keys_and_indexes(schema_editor, partitioned=True)


def _unpartition(apps: Any, schema_editor: Any) -> None:
    run = schema_editor.execute
    run(f"CREATE TABLE {OLD} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    run(f"INSERT INTO {OLD} SELECT * FROM {TABLE}")
    run(f"DROP TABLE {TABLE} CASCADE")
    run(f"ALTER TABLE {OLD} RENAME TO {TABLE}")
    _keys_and_indexes(schema_editor, partitioned=False)


class OnPostgresql(migrations.RunPython):
    """Run on PostgreSQL only."""

    def database_forwards(self, app_label: str, schema_editor: Any, *args: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, *args)

    def database_backwards(self, app_label: str, schema_editor: Any, *args: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, *args)


class ElsewhereThanPostgresql(Operation):
    """Another operation, applied to the database everywhere but on PostgreSQL."""

    def __init__(self, operation: Operation) -> None:
        self.operation = operation

    def state_forwards(self, app_label: str, state: Any) -> None:
        self.operation.state_forwards(app_label, state)

    def database_forwards(self, app_label: str, schema_editor: Any, *args: Any) -> None:
        if schema_editor.connection.vendor != "postgresql":
            self.operation.database_forwards(app_label, schema_editor, *args)

    def database_backwards(self, app_label: str, schema_editor: Any, *args: Any) -> None:
        if schema_editor.connection.vendor != "postgresql":
            self.operation.database_backwards(app_label, schema_editor, *args)

    def describe(self) -> str:
        return f"{self.operation.describe()} (not on PostgreSQL)"

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return self.__class__.__name__, [self.operation], {}


EVENT_CHANGES: list[Operation] = [
    migrations.AlterField(
        model_name="usageevent",
        name="group",
        field=models.ForeignKey(
            db_index=False,
            on_delete=django.db.models.deletion.PROTECT,
            related_name="usage_events",
            to="groups.group",
        ),
    ),
    migrations.AlterField(
        model_name="usageevent",
        name="request_id",
        field=models.CharField(max_length=64),
    ),
    migrations.AlterField(
        model_name="usageevent",
        name="workspace",
        field=models.ForeignKey(
            db_index=False,
            on_delete=django.db.models.deletion.PROTECT,
            related_name="usage_events",
            to="groups.workspace",
        ),
    ),
    migrations.AddIndex(
        model_name="usageevent",
        index=models.Index(condition=~models.Q(batch=""), fields=["batch"], name="usage_event_batch"),
    ),
    migrations.AddConstraint(
        model_name="usageevent",
        constraint=models.UniqueConstraint(
            fields=("request_id", "timestamp"), name="usage_event_request_unique"
        ),
    ),
]


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0004_usage_event_cost"),
        ("groups", "0006_audit_search_indexes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=EVENT_CHANGES,
            database_operations=[
                *(ElsewhereThanPostgresql(operation) for operation in EVENT_CHANGES),
                OnPostgresql(_partition, _unpartition, elidable=False),
            ],
        ),
        migrations.AddIndex(
            model_name="webhookdelivery",
            index=models.Index(
                condition=models.Q(status__in=["pending", "disabled", "quarantined"]),
                fields=["batch"],
                name="delivery_unsettled",
            ),
        ),
    ]
