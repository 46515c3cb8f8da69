"""Indexes behind the admin's audit search on PostgreSQL: an object id, an actor prefix, and the
key prefix, external id and group id held in a row's before/after state (partial: only the rows
whose state has the key)."""

from typing import Any

from django.db import migrations

from gateway_project.kernel.pg_indexes import concurrent_indexes

STATE_KEYS = (
    ("after", "prefix"),
    ("before", "prefix"),
    ("after", "external_entity_id"),
    ("before", "external_entity_id"),
    ("after", "group_id"),
)


def _state_key(column: str, key: str) -> str:
    return f"groups_auditevent (({column} -> '{key}')) WHERE ({column} -> '{key}') IS NOT NULL"


def _statistics_create(apps: Any, schema_editor: Any) -> None:
    # The planner reads no statistics off a partial index: without these it guesses each state
    # key matches 0.5% of the table and walks the whole created_at index instead of the indexes.
    if schema_editor.connection.vendor == "postgresql":
        keys = ", ".join(f"({column} -> '{key}')" for column, key in STATE_KEYS)
        schema_editor.execute(
            f"CREATE STATISTICS IF NOT EXISTS audit_state_keys ON {keys} FROM groups_auditevent"
        )
        schema_editor.execute("ANALYZE groups_auditevent")


def _statistics_drop(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP STATISTICS IF EXISTS audit_state_keys")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("groups", "0005_admin_search_indexes")]

    operations = [
        concurrent_indexes(
            {
                "audit_object_id": "groups_auditevent (object_id)",
                "audit_actor_pattern": "groups_auditevent (actor varchar_pattern_ops)",
                "audit_after_prefix": _state_key("after", "prefix"),
                "audit_before_prefix": _state_key("before", "prefix"),
                "audit_after_external_id": _state_key("after", "external_entity_id"),
                "audit_before_external_id": _state_key("before", "external_entity_id"),
                "audit_after_group_id": _state_key("after", "group_id"),
            }
        ),
        migrations.RunPython(_statistics_create, _statistics_drop, elidable=False),
    ]
