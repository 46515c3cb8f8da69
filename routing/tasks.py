"""Celery tasks of routing."""

from __future__ import annotations

from celery import shared_task
from django_redis import get_redis_connection

from routing.activity_read import keys_last_used_sync
from routing.journal import journal_reap


@shared_task(name="routing.inflight_reap", ignore_result=True)  # type: ignore[untyped-decorator]
def inflight_reap_task() -> int:
    """Usage events for requests whose gateway worker died mid-request (beat: every 5 s)."""
    return journal_reap(client=get_redis_connection("default"))


@shared_task(name="routing.keys_last_used_sync", ignore_result=True)  # type: ignore[untyped-decorator]
def keys_last_used_sync_task() -> int:
    """Federated keys' last use, noted by the gateway, into the database (beat: every minute)."""
    return keys_last_used_sync()
