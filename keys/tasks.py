"""Celery tasks of keys: scheduled revokes (beat: every 10 seconds)."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from keys.services import scheduled_revokes_run


@shared_task(name="keys.scheduled_revokes", ignore_result=True)  # type: ignore[untyped-decorator]
def scheduled_revokes() -> int:
    """Revoke the keys whose scheduled revoke is due; returns how many."""
    return len(scheduled_revokes_run(now=timezone.now()))
