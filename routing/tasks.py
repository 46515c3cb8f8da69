"""Celery tasks of routing."""

from __future__ import annotations

from celery import shared_task
from django_redis import get_redis_connection

from routing.journal import journal_reap


@shared_task(name="routing.inflight_reap", ignore_result=True)  # type: ignore[untyped-decorator]
def inflight_reap_task() -> int:
    """Usage events for requests whose gateway worker died mid-request (beat: every 5 s)."""
    return journal_reap(client=get_redis_connection("default"))
