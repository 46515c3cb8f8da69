"""SIGTERM to a Celery worker (`gateway worker`) mid-delivery: it delivers first, then exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from billing.models import DeliveryStatus, UsageEvent, WebhookDelivery
from billing.tasks import deliveries_enqueue_due
from groups.models import Workspace
from tests.billing.conftest import endpoint_add
from tests.billing.scripted_server import Reply, ScriptedServer
from tests.faults.processes import group_kill, log_tail, spawn, suite_env
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
TIMEOUT = 3  # the webhook timeout of the test and its worker: the delivery outlasts the SIGTERM


def _worker(log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "gateway_project.cli", "worker", "--concurrency", "1"]
    return spawn(argv, env=suite_env(GATEWAY_WEBHOOK_TIMEOUT=str(TIMEOUT)), log=log)


def test_a_worker_told_to_stop_finishes_its_delivery_first(
    settings: Any,
    tmp_path: Path,
    workspace: Workspace,
    make_event: Callable[..., UsageEvent],
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("worker processes need a database they can share (PostgreSQL)")
    settings.GATEWAY_WEBHOOK_TIMEOUT = TIMEOUT
    settings.GATEWAY_WEBHOOK_FLUSH_SECONDS = 0
    hang, log = threading.Event(), tmp_path / "worker.log"
    with ScriptedServer(Reply(200, hold=hang)) as server:
        endpoint_add(workspace=workspace, url=server.url)
        make_event()
        worker = _worker(log)
        try:
            deliveries_enqueue_due()
            wait_until(lambda: len(server.requests) == 1, timeout=30, what=log_tail(log))

            # Like Kubernetes: SIGTERM to the main process only, while the receiver holds on.
            os.kill(worker.pid, signal.SIGTERM)
            wait_until(lambda: "Warm shutdown" in log.read_text(), timeout=10, what=log_tail(log))
            hang.set()
            exit_code = worker.wait(timeout=30)
        finally:
            group_kill(worker)

    assert exit_code == 0, log_tail(log)
    assert WebhookDelivery.objects.get().status == DeliveryStatus.DELIVERED
    assert len(server.requests) == 1
