"""SSRF guard at send time: resolve once, refuse private addresses, pin the checked one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from billing.models import UsageEvent, WebhookDelivery
from billing.services.attempts import delivery_attempt_run
from billing.services.batching import events_batch
from groups.models import Workspace
from tests.billing.conftest import endpoint_add
from tests.billing.scripted_server import Reply, ScriptedServer
from tests.fakes.webhook_receiver import WebhookReceiverThread

PRIVATE = [
    "127.0.0.1",
    "10.0.0.5",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "198.18.0.1",
    "192.0.0.8",
    "203.0.113.9",
    "224.0.0.1",
    "::1",
    "::ffff:127.0.0.1",
    "fd00::1",
    "fe80::1",
    "64:ff9b::a00:1",
    "2002:c0a8:101::1",
    "fd00:ec2::254",
]


def _send(*, workspace: Workspace, url: str, resolve: Callable[[str], list[str]]) -> object:
    endpoint_add(workspace=workspace, url=url)
    events_batch(now=timezone.now() + timedelta(seconds=10))
    delivery = WebhookDelivery.objects.get()
    return delivery_attempt_run(
        delivery_id=delivery.id, now=timezone.now() + timedelta(seconds=10), resolve=resolve
    )


@pytest.mark.parametrize("address", PRIVATE)
def test_a_host_whose_dns_now_points_to_a_private_address_is_refused_at_send_time(
    address: str, settings: Any, workspace: Workspace, make_event: Callable[..., UsageEvent]
) -> None:
    settings.GATEWAY_UPSTREAM_ALLOWLIST = []
    settings.GATEWAY_WEBHOOK_TIMEOUT = 2  # a guard gap must not hang the suite on the network
    make_event()

    attempt = _send(
        workspace=workspace, url="https://hooks.example.com/webhooks", resolve=lambda _h: [address]
    )

    assert attempt.status_code is None and attempt.error.startswith("refused")  # type: ignore[attr-defined]


def test_rebinding_to_loopback_never_reaches_the_receiver(
    settings: Any,
    workspace: Workspace,
    make_event: Callable[..., UsageEvent],
    receiver: WebhookReceiverThread,
) -> None:
    settings.GATEWAY_UPSTREAM_ALLOWLIST = []
    make_event()

    attempt = _send(
        workspace=workspace,
        url=f"https://hooks.example.com:{receiver.port}/webhooks",
        resolve=lambda _h: ["127.0.0.1"],
    )

    assert attempt.error.startswith("refused")  # type: ignore[attr-defined]
    assert receiver.receiver.deliveries == []


def test_a_host_resolving_to_public_and_private_addresses_is_refused(
    settings: Any, workspace: Workspace, make_event: Callable[..., UsageEvent]
) -> None:
    settings.GATEWAY_UPSTREAM_ALLOWLIST = []
    make_event()

    attempt = _send(
        workspace=workspace,
        url="https://hooks.example.com/w",
        resolve=lambda _h: ["93.184.216.34", "10.0.0.1"],
    )

    assert attempt.error.startswith("refused")  # type: ignore[attr-defined]


def test_plain_http_to_a_public_address_is_refused(
    settings: Any, workspace: Workspace, make_event: Callable[..., UsageEvent]
) -> None:
    settings.GATEWAY_UPSTREAM_ALLOWLIST = []
    make_event()

    attempt = _send(
        workspace=workspace, url="http://hooks.example.com/w", resolve=lambda _h: ["93.184.216.34"]
    )

    assert attempt.error.startswith("refused")  # type: ignore[attr-defined]


def test_the_request_goes_to_the_checked_address_with_the_original_host_header(
    settings: Any, workspace: Workspace, make_event: Callable[..., UsageEvent]
) -> None:
    settings.GATEWAY_UPSTREAM_ALLOWLIST = ["127.0.0.0/8"]
    resolved: list[str] = []
    make_event()

    def resolve(host: str) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    with ScriptedServer(Reply(204)) as server:
        port = server.url.split(":")[2].split("/")[0]
        attempt = _send(
            workspace=workspace,
            url=f"http://hooks.example.test:{port}/hook",
            resolve=resolve,
        )
        [request] = server.requests

    assert attempt.status_code == 204  # type: ignore[attr-defined]
    assert resolved == ["hooks.example.test"]
    assert request["headers"]["host"] == f"hooks.example.test:{port}"
