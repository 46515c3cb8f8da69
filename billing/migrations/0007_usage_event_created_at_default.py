"""PostgreSQL: a usage event's `created_at` defaults to now(), the start of the transaction that
stores it. Ingest's COPY leaves the column out, so a batch prepared ahead of a slow write is still
stamped inside the transaction that stores it (the usage rollup's watermark counts on it). SQLite
rows are inserted by the ORM, which stamps them when they are saved: nothing to do there."""

from typing import Any

from django.db import migrations


def _default_now(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE billing_usageevent ALTER COLUMN created_at SET DEFAULT now()"
        )


def _no_default(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE billing_usageevent ALTER COLUMN created_at DROP DEFAULT")


class Migration(migrations.Migration):
    dependencies = [("billing", "0006_usage_rollup")]

    operations = [migrations.RunPython(_default_now, _no_default, elidable=False)]
