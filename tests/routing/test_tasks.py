"""Celery beat runs only tasks that are registered under the names its schedule uses."""

from __future__ import annotations

from django.conf import settings

from gateway_project.celery import app


def test_every_scheduled_task_is_registered() -> None:
    app.loader.import_default_modules()

    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}

    assert "routing.inflight_reap" in scheduled
    assert "routing.keys_last_used_sync" in scheduled
    assert scheduled <= set(app.tasks)
