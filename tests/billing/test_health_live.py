"""Billing health against real Celery processes: beat and worker heartbeats are written by the
processes themselves, a killed worker turns red while beat stays green, and Resend reports the
attempt a live worker made."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client

from billing.health import RED, pipeline_findings
from billing.liveness import notes_read
from billing.models import WebhookDelivery
from gateway_project.env import BASE_DIR
from groups.models import Workspace
from tests.billing.conftest import endpoint_add
from tests.fakes.webhook_receiver import WebhookReceiverThread

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def celery(tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Start a Celery `worker` or `beat` on the test database and broker; killed at the end."""
    started: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "REDIS_URL": django_settings.REDIS_URL,
        "GATEWAY_UPSTREAM_ALLOWLIST": "127.0.0.0/8",
    }

    def start(role: str) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "celery", "-A", "gateway_project", role, "-l", "warning"]
        if role == "worker":
            args += ["-P", "solo", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        else:
            args += ["-s", str(tmp_path / "celerybeat-schedule")]
        proc = subprocess.Popen(
            args,
            cwd=BASE_DIR,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _wait_for(condition: Callable[[], Any], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


def _levels() -> dict[str, str]:
    return {finding.label: finding.level for finding in pipeline_findings()}


def test_heartbeats_come_from_the_processes_and_a_killed_worker_turns_red(
    celery: Callable[[str], subprocess.Popen[bytes]], settings: Any
) -> None:
    # Three beat periods (5 s each): a loaded machine may delay one publish, never three.
    settings.GATEWAY_BILLING_HEARTBEAT_STALE_SECONDS = 15
    worker = celery("worker")
    celery("beat")
    _wait_for(lambda: {"beat", "worker"} <= set(notes_read().heartbeats), timeout=60)
    _wait_for(lambda: "deliveries_enqueue" in notes_read().steps, timeout=30)
    alive = _levels()

    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(10)
    _wait_for(lambda: _levels()["Celery worker heartbeat"] == RED, timeout=45)
    after = _levels()

    assert alive["Celery beat heartbeat"] == alive["Celery worker heartbeat"] == "ok"
    assert alive["Step: enqueueing due deliveries"] == "ok"
    assert after["Celery beat heartbeat"] == "ok"


def test_resend_reports_the_attempt_of_a_live_worker(
    celery: Callable[[str], subprocess.Popen[bytes]],
    admin_client: Client,
    workspace: Workspace,
) -> None:
    with WebhookReceiverThread() as receiver:
        endpoint = endpoint_add(workspace=workspace, url=receiver.url)
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint,
            body=b'{"type": "API_BILLING_USAGE", "data": {"events": []}}',
            event_count=0,
            status="failed",
            attempts=10,
            last_status_code=500,
        )
        celery("worker")
        _wait_for(lambda: "worker" in notes_read().heartbeats, timeout=60)

        page = admin_client.post(
            "/admin/billing/webhookdelivery/",
            {"action": "resend", "_selected_action": [delivery.pk]},
            follow=True,
        ).content.decode()

    assert "delivered on attempt 11 (HTTP 200)" in page
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == "delivered"
