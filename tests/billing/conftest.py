"""Billing fixtures: a group, usage events, a verifying webhook receiver and its endpoint."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from itertools import count
from typing import Any

import pytest
from django.utils import timezone

from billing.models import UsageEvent, WebhookDelivery, WebhookEndpoint, WebhookSecret
from billing.services.batching import events_batch
from gateway_project.celery import app
from gateway_project.kernel.encryption import encrypt
from groups.models import Group, Workspace
from tests.fakes.webhook_receiver import WebhookReceiverThread

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
def receiver() -> Iterator[WebhookReceiverThread]:
    """A receiver on loopback that verifies signatures with `standardwebhooks` (secret SECRET)."""
    with WebhookReceiverThread(secret=SECRET) as thread:
        yield thread


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
