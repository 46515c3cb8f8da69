"""A usage event's workspace and group are no longer foreign-key constraints in the database:
checking them on every inserted row was half of PostgreSQL's cost per event. Ingest checks each
batch's (workspace, group) pairs (billing/services/usage_store.py); neither row is ever deleted."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0007_usage_event_created_at_default'),
        ('groups', '0006_audit_search_indexes'),
    ]

    operations = [
        migrations.AlterField(
            model_name='usageevent',
            name='group',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='usage_events', to='groups.group'),
        ),
        migrations.AlterField(
            model_name='usageevent',
            name='workspace',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='usage_events', to='groups.workspace'),
        ),
    ]
