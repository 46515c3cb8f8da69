"""Indexes behind the admin's group searches on PostgreSQL: an external id prefix (whatever the
database's collation) and a name prefix in any case."""

from django.db import migrations

from gateway_project.kernel.pg_indexes import concurrent_indexes


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("groups", "0004_spend_month_limits")]

    operations = [
        concurrent_indexes(
            {
                "group_external_id_pattern": "groups_group (external_entity_id varchar_pattern_ops)",
                "group_name_upper_pattern": "groups_group (UPPER(name) text_pattern_ops)",
            }
        )
    ]
