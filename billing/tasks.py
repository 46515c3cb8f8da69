"""Celery tasks of billing."""

from __future__ import annotations

from celery import shared_task

from billing.ingest import usage_ingest


@shared_task(name="billing.usage_ingest", ignore_result=True)  # type: ignore[untyped-decorator]
def usage_ingest_task() -> int:
    """Move usage events from the Redis stream into the database (beat: every second)."""
    return usage_ingest()
