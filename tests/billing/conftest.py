"""Billing fixtures: a group, usage events, a verifying webhook receiver and its endpoint, Celery
processes and the gateway as a real server."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.utils import timezone

from billing.models import UsageEvent, WebhookDelivery, WebhookEndpoint, WebhookSecret
from billing.services.batching import events_batch
from gateway_project.celery import app
from gateway_project.kernel.encryption import encrypt
from groups.models import Group, Workspace
from groups.services.audit import SYSTEM_ACTOR
from keys.services import management_key_create
from tests.fakes.webhook_receiver import WebhookReceiverThread
from tests.faults.processes import Celery, suite_env
from tests.proxy.conftest import (  # noqa: F401 - fixtures reused from the proxy suite
    gateway,
    tenant,
    upstream,
)

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
_request_numbers = count(1)


@pytest.fixture
def group(workspace: Workspace) -> Group:
    """A root group of the `acme` workspace, billed as `cust_42`."""
    return Group.objects.create(
        workspace=workspace, external_entity_id="cust_42", name="Customer 42"
    )


@pytest.fixture
def make_event(group: Group) -> Callable[..., UsageEvent]:
    """Insert a usage event of `group` (fields override the defaults)."""

    def make(*, timestamp: datetime | None = None, **fields: Any) -> UsageEvent:
        values: dict[str, Any] = {
            "request_id": f"req-{next(_request_numbers)}",
            "timestamp": timestamp or timezone.now(),
            "workspace": group.workspace,
            "group": group,
            "external_entity_id": group.external_entity_id,
            "api_key_prefix": "sky_abc123",
            "model_slug": "acme/llama",
            "request_metadata": {"trace": "t-1"},
            "status": "completed",
            "input_tokens": 100,
            "output_tokens": 200,
            **fields,
        }
        return UsageEvent.objects.create(**values)

    return make


@pytest.fixture
def eager() -> Iterator[None]:
    """Run `.delay()` inline, as a worker would, for the duration of a test."""
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


@pytest.fixture
def flush_now(settings: Any) -> None:
    """Every beat batches what is pending, however young."""
    settings.GATEWAY_WEBHOOK_FLUSH_SECONDS = 0


@pytest.fixture
def receiver() -> Iterator[WebhookReceiverThread]:
    """A receiver on loopback that verifies signatures with `standardwebhooks` (secret SECRET)."""
    with WebhookReceiverThread(secret=SECRET) as thread:
        yield thread


@pytest.fixture
def celery(tmp_path: Path) -> Iterator[Callable[..., Celery]]:
    """Start a Celery `worker` (solo pool) or `beat` on the test's database and Redis, with `env`
    added to its environment; whatever is still running at the end is killed."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("worker processes need a database they can share (PostgreSQL)")
    started: list[Celery] = []

    def start(role: str, **env: str) -> Celery:
        process = Celery(suite_env(**env), tmp_path, role=role, solo=True).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def endpoint_add(*, workspace: Workspace, url: str, secret: str = SECRET) -> WebhookEndpoint:
    """A webhook endpoint signing with `secret` (loopback is allow-listed in the test settings)."""
    endpoint = WebhookEndpoint.objects.create(workspace=workspace, url=url)
    WebhookSecret.objects.create(endpoint=endpoint, ciphertext=encrypt(secret))
    return endpoint


@pytest.fixture
def endpoint(workspace: Workspace, receiver: WebhookReceiverThread) -> WebhookEndpoint:
    """The workspace's endpoint, pointing at `receiver`."""
    return endpoint_add(workspace=workspace, url=receiver.url)


class NoJitter(random.Random):
    """The middle of every jitter range: the published retry schedule exactly."""

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


def batched_delivery(now: datetime) -> WebhookDelivery:
    """Batch the pending events at `now` into the one delivery the test expects."""
    events_batch(now=now)
    return WebhookDelivery.objects.get()


def one_event_batched(make_event: Callable[..., UsageEvent]) -> tuple[WebhookDelivery, datetime]:
    """One new event, batched 10 s from now into the one delivery: that delivery and the time."""
    make_event()
    now = timezone.now() + timedelta(seconds=10)
    return batched_delivery(now), now


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def events_listed(*, gateway_url: str, workspace: Workspace, since: datetime) -> httpx.Response:
    """The events API's answer, to a new management key of `workspace`, for the events from `since`
    to a minute from now."""
    _, management = management_key_create(workspace=workspace, actor=SYSTEM_ACTOR)
    until = timezone.now() + timedelta(minutes=1)
    return httpx.get(
        f"{gateway_url}/v1/gateway/events?start_time={_iso(since)}&end_time={_iso(until)}",
        headers={"Authorization": f"Bearer {management}"},
    )
