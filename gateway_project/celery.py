"""The Celery application; tasks live in each app's tasks.py.

Logging stays Django's (settings.LOGGING, JSON lines): Celery neither takes over the root logger
nor installs its own format, in the worker and in beat alike. Each task a worker runs is one line
of the request schema (gateway_project/kernel/logs.py). A worker with
GATEWAY_WORKER_METRICS_PORT set serves the billing pipeline's Prometheus numbers on that port
(gateway_project/worker_metrics.py).
"""

from __future__ import annotations

import logging
import logging.config
import os
import time
from typing import Any

from celery import Celery
from celery.apps import worker as celery_worker_app
from celery.signals import celeryd_init, setup_logging, task_postrun, task_prerun, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

app = Celery("gateway")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

task_logger = logging.getLogger("gateway.task")
_started: dict[str, float] = {}


@celeryd_init.connect  # type: ignore[untyped-decorator]
@setup_logging.connect  # type: ignore[untyped-decorator]
def logging_configure(**_: Any) -> None:
    """Django's LOGGING for the worker and beat (a setup_logging receiver stops Celery's own
    set-up); from the worker's first signal on, so its start-up warnings are JSON lines too."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    logging.captureWarnings(True)
    # The worker prints its shutdown notice straight to the terminal: log it instead.
    celery_worker_app.safe_say = _notice_log


def _notice_log(msg: str, f: Any = None) -> None:
    logging.getLogger("celery.apps.worker").info(msg.strip())


@task_prerun.connect  # type: ignore[untyped-decorator]
def task_started(task_id: str, **_: Any) -> None:
    """Note when a task starts, for its line."""
    _started[task_id] = time.perf_counter()


@task_postrun.connect  # type: ignore[untyped-decorator]
def task_finished(task_id: str, task: Any, state: str | None = None, **_: Any) -> None:
    """One line per task run, with the keys of an inference request's line."""
    started = _started.pop(task_id, None)
    total_ms = None if started is None else round((time.perf_counter() - started) * 1000, 3)
    task_logger.info(
        "task",
        extra={
            "request_id": task_id,
            "route": task.name,
            "status": (state or "UNKNOWN").lower(),
            "total_ms": total_ms,
        },
    )


@worker_init.connect  # type: ignore[untyped-decorator]
def worker_metrics_start(**_: Any) -> None:
    """The worker's metrics endpoint, when GATEWAY_WORKER_METRICS_PORT asks for one."""
    from gateway_project.worker_metrics import worker_metrics_serve

    worker_metrics_serve()
