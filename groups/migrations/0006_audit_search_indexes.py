"""Indexes behind the admin's audit search on PostgreSQL: an object id, an actor prefix, and the
key prefix, external id and group id held in a row's before/after state (partial: only the rows
whose state has the key)."""

from django.db import migrations

from gateway_project.kernel.pg_indexes import concurrent_indexes


def _state_key(column: str, key: str) -> str:
    return f"groups_auditevent (({column} -> '{key}')) WHERE ({column} -> '{key}') IS NOT NULL"


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
        )
    ]
