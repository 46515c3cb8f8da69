"""Writes and workflows of billing, one module per job; import the module you need.

- `usage`: the inference path's writer (records a usage event; imports nothing it does not need).
- `usage_store`: a usage event's database row, stored leniently.
- `ingest`: the Redis stream -> database consumer.
- `batching`, `attempts`: usage events -> frozen webhook deliveries -> one attempt each.
- `webhooks`: endpoints, secrets, resend and recovery (staff).
- `quarantine`: staff releasing rows a pipeline step set aside.

Nothing is re-exported here, so importing `billing.services.usage` loads only that writer.
"""
