"""Indexes behind the admin's key searches on PostgreSQL: a key prefix (whatever the database's
collation) and a key name prefix in any case."""

from django.db import migrations

from gateway_project.kernel.pg_indexes import concurrent_indexes


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("keys", "0004_scheduled_revoke")]

    operations = [
        concurrent_indexes(
            {
                "api_key_prefix_pattern": "keys_apikey (prefix varchar_pattern_ops)",
                "api_key_name_upper_pattern": "keys_apikey (UPPER(name) text_pattern_ops)",
            }
        )
    ]
