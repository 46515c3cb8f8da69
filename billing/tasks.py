"""Celery tasks of billing."""

from __future__ import annotations

from celery import shared_task

from billing.ingest import usage_ingest


@shared_task(name="billing.usage_ingest", ignore_result=True)  # type: ignore[untyped-decorator]
def usage_ingest_task() -> int:
    """Move usage events from the Redis stream into the database (beat: every second)."""
    return usage_ingest()


@shared_task(name="billing.inflight_reap", ignore_result=True)  # type: ignore[untyped-decorator]
def inflight_reap_task() -> int:
    """Usage events for requests whose gateway worker died mid-request (beat: every 5 s)."""
    from django_redis import get_redis_connection

    from routing.journal import journal_reap

    return journal_reap(client=get_redis_connection("default"))
