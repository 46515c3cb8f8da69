"""Keys: a revoke scheduled by staff when a leaked key is rotated (run by keys.scheduled_revokes)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('keys', '0003_key_expiry'),
    ]

    operations = [
        migrations.AddField(
            model_name='apikey',
            name='revoke_at',
            field=models.DateTimeField(blank=True, help_text='A revoke staff scheduled (after a rotation), in UTC.', null=True),
        ),
        migrations.AddField(
            model_name='managementkey',
            name='revoke_at',
            field=models.DateTimeField(blank=True, help_text='A revoke staff scheduled (after a rotation), in UTC.', null=True),
        ),
    ]
