"""Migration operations for PostgreSQL-only indexes (expression and pattern-ops indexes) that
Django's model indexes cannot express for both databases; SQLite, for local use, goes without."""

from __future__ import annotations

from typing import Any

from django.db import migrations


def concurrent_indexes(indexes: dict[str, str]) -> migrations.RunPython:
    """Create `{name: "table (expression opclass)"}` concurrently (the table keeps taking writes);
    the migration using it must set `atomic = False`."""

    def create(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            for name, target in indexes.items():
                schema_editor.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {target}")

    def drop(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            for name in indexes:
                schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")

    return migrations.RunPython(create, drop, elidable=False)
