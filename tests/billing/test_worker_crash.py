"""A Celery worker killed with SIGKILL mid-delivery loses nothing (real workers, PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection

from billing.models import DeliveryStatus, UsageEvent, WebhookDelivery
from billing.tasks import deliveries_enqueue_due
from gateway_project.env import BASE_DIR
from groups.models import Workspace
from tests.billing.conftest import endpoint_add
from tests.billing.scripted_server import Reply, ScriptedServer

TIMEOUT = 3  # the webhook timeout of the test and its workers: a 17 s lease
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def start_worker() -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Start Celery workers on the test database and broker; kills leftovers at the end."""
    started: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "REDIS_URL": django_settings.REDIS_URL,
        "GATEWAY_WEBHOOK_TIMEOUT": str(TIMEOUT),
        "GATEWAY_UPSTREAM_ALLOWLIST": "127.0.0.0/8",
    }
    args = [sys.executable, "-m", "celery", "-A", "gateway_project", "worker", "-P", "solo"]
    args += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"]

    def start() -> subprocess.Popen[bytes]:
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


def _wait_for(condition: Callable[[], Any], *, timeout: float, beat: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        if beat:
            deliveries_enqueue_due()
        time.sleep(0.05)


def test_a_worker_killed_mid_delivery_loses_nothing(
    settings: Any,
    workspace: Workspace,
    make_event: Callable[..., UsageEvent],
    start_worker: Callable[[], subprocess.Popen[bytes]],
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("worker processes need a database they can share (PostgreSQL)")
    settings.GATEWAY_WEBHOOK_TIMEOUT = TIMEOUT
    settings.GATEWAY_WEBHOOK_FLUSH_SECONDS = 0
    hang = threading.Event()
    with ScriptedServer(Reply(200, hold=hang), Reply(200)) as server:
        endpoint_add(workspace=workspace, url=server.url)
        make_event()
        first = start_worker()
        deliveries_enqueue_due()
        _wait_for(lambda: len(server.requests) == 1, timeout=30)

        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        hang.set()
        start_worker()
        delivery = WebhookDelivery.objects.get()
        _wait_for(
            lambda: WebhookDelivery.objects.get().status == DeliveryStatus.DELIVERED,
            timeout=60,
            beat=True,
        )

    ids = [r["headers"]["webhook-id"] for r in server.requests]
    assert ids == [delivery.id, delivery.id]
    assert server.requests[0]["body"] == server.requests[1]["body"] == bytes(delivery.body)
