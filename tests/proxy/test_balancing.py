"""Load balancing (PRIORITY, WEIGHTED), circuit breakers and the first-byte timeout rule."""

from __future__ import annotations

import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from routing.circuit_state import KEY_PREFIX
from tests.proxy.conftest import SLUG, StaticUpstream, compatible_target, tenant_build
from tests.waiting import wait_until

CHAT = "/v1/chat/completions"


@pytest.fixture
def failing():
    """An upstream that always answers 503."""
    server = StaticUpstream(503, b'{"error": {"message": "overloaded", "type": "server_error"}}')
    yield server
    server.stop()


def _post(gateway, key, client=httpx):
    body = {"model": SLUG, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    headers = {"Authorization": f"Bearer {key}"}
    return client.post(f"{gateway.url}{CHAT}", json=body, headers=headers, timeout=10)


def _burst(gateway, key, count):
    with ThreadPoolExecutor(max_workers=count) as pool:
        return [r.status_code for r in pool.map(lambda _: _post(gateway, key), range(count))]


def _closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def _open_until(redis_server):
    """The first target's breaker's end of cooldown, in epoch seconds (0: not open)."""
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    keys = [k for k in client.keys(KEY_PREFIX + "*") if str(k).split(":")[-2] == "0"]
    until = client.hget(keys[0], "u") if keys else None
    client.close()
    return float(until or 0) / 1000


def test_a_failing_primary_is_skipped_once_its_breaker_opens(
    gateway, workspace, failing, upstream, caplog
):
    targets = [compatible_target(failing.url), compatible_target(upstream.url)]
    tenant = tenant_build(workspace=workspace, targets=targets)

    with caplog.at_level(logging.WARNING, logger="gateway.circuit"):
        statuses = [_post(gateway, tenant.key).status_code for _ in range(50)]

    assert statuses == [200] * 50
    assert failing.hits == 5
    assert len(upstream.requests) == 50
    opened = [r for r in caplog.records if r.name == "gateway.circuit"]
    assert [(r.target, r.to) for r in opened] == [("OPENAI_COMPATIBLE#0", "open")]


def test_an_open_breaker_lets_exactly_one_probe_through_per_cooldown(
    gateway, workspace, failing, upstream, settings, redis_server
):
    settings.GATEWAY_CIRCUIT_COOLDOWN = 2
    targets = [compatible_target(failing.url), compatible_target(upstream.url)]
    tenant = tenant_build(workspace=workspace, targets=targets)
    assert [_post(gateway, tenant.key).status_code for _ in range(5)] == [200] * 5
    assert _burst(gateway, tenant.key, 8) == [200] * 8
    assert failing.hits == 5

    for cooldown in (1, 2):
        until = _open_until(redis_server)
        wait_until(lambda: time.time() > until, timeout=5)  # noqa: B023 - read at once
        assert _burst(gateway, tenant.key, 8) == [200] * 8
        assert failing.hits == 5 + cooldown


def test_a_successful_probe_closes_the_breaker(gateway, workspace, upstream, settings):
    settings.GATEWAY_CIRCUIT_COOLDOWN = 0.3
    flaky = StaticUpstream(503, b'{"error": {"message": "down", "type": "server_error"}}')
    tenant = tenant_build(
        workspace=workspace,
        targets=[compatible_target(flaky.url), compatible_target(upstream.url, "b")],
    )
    [_post(gateway, tenant.key) for _ in range(6)]
    flaky.stop()
    # The same address now answers: the fake model server takes over the port.
    from tests.fakes.model_server import FakeModelServerThread

    port = int(flaky.url.rsplit(":", 1)[1].split("/")[0])
    with FakeModelServerThread(port=port) as revived:
        wait_until(lambda: _post(gateway, tenant.key) and len(revived.requests) == 1, timeout=5)
        statuses = [_post(gateway, tenant.key).status_code for _ in range(5)]

        assert statuses == [200] * 5
        assert len(revived.requests) == 6


def test_weighted_routing_spreads_requests_by_weight(gateway, workspace, upstream, backup_upstream):
    targets = [
        {**compatible_target(upstream.url), "weight": 3},
        {**compatible_target(backup_upstream.url, "b"), "weight": 1},
    ]
    tenant = tenant_build(workspace=workspace, targets=targets, routing={"strategy": "WEIGHTED"})

    with httpx.Client() as client:  # one connection: a new client per request costs ~0.1 s
        statuses = [_post(gateway, tenant.key, client).status_code for _ in range(400)]

    assert statuses == [200] * 400
    heavier = len(upstream.requests) / 400
    assert 0.65 <= heavier <= 0.85, heavier
    assert len(upstream.requests) + len(backup_upstream.requests) == 400


def test_priority_routing_ignores_weights(gateway, workspace, upstream, backup_upstream):
    targets = [
        {**compatible_target(upstream.url), "weight": 1},
        {**compatible_target(backup_upstream.url, "b"), "weight": 1000},
    ]
    tenant = tenant_build(workspace=workspace, targets=targets)

    statuses = [_post(gateway, tenant.key).status_code for _ in range(20)]

    assert statuses == [200] * 20
    assert (len(upstream.requests), len(backup_upstream.requests)) == (20, 0)


def test_weighted_routing_falls_back_when_the_heavier_target_is_down(
    gateway, workspace, backup_upstream
):
    targets = [
        {**compatible_target(_closed_port_url()), "weight": 3},
        {**compatible_target(backup_upstream.url, "b"), "weight": 1},
    ]
    tenant = tenant_build(workspace=workspace, targets=targets, routing={"strategy": "WEIGHTED"})

    with httpx.Client() as client:
        statuses = [_post(gateway, tenant.key, client).status_code for _ in range(100)]

    assert statuses == [200] * 100
    assert len(backup_upstream.requests) == 100


def test_a_hung_primary_gives_way_after_the_fallback_first_byte_timeout(
    gateway, workspace, upstream, settings
):
    settings.GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT = 30
    settings.GATEWAY_UPSTREAM_FALLBACK_FIRST_BYTE_TIMEOUT = 0.3
    hung = StaticUpstream(200, b"{}", head_delay=3)
    targets = [compatible_target(hung.url), compatible_target(upstream.url, "b")]
    tenant = tenant_build(workspace=workspace, targets=targets)

    started = time.monotonic()
    response = _post(gateway, tenant.key)
    took = time.monotonic() - started
    hung.stop()

    assert response.status_code == 200 and upstream.requests[-1].json["model"] == "b"
    assert took < 2


def test_an_endpoint_first_byte_timeout_applies_to_every_target(
    gateway, workspace, backup_upstream, settings
):
    settings.GATEWAY_UPSTREAM_FALLBACK_FIRST_BYTE_TIMEOUT = 0.2
    answer = {"id": "x", "object": "chat.completion", "model": "m", "choices": []}
    slow = StaticUpstream(200, json.dumps(answer).encode(), head_delay=0.6)
    targets = [compatible_target(slow.url), compatible_target(backup_upstream.url, "b")]
    tenant = tenant_build(workspace=workspace, targets=targets, routing={"first_byte_timeout": 5})

    response = _post(gateway, tenant.key)
    slow.stop()

    assert response.status_code == 200 and response.json()["id"] == "x"
    assert not backup_upstream.requests


def _metric(gateway, line_start):
    text = httpx.get(f"{gateway.url}/metrics").text
    values = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(line_start)]
    return float(values[0]) if values else 0.0


def test_breaker_transitions_are_exported_as_metrics(gateway, workspace, failing, upstream):
    targets = [compatible_target(failing.url), compatible_target(upstream.url)]
    tenant = tenant_build(workspace=workspace, targets=targets)
    labels = f'slug="{SLUG}",target="OPENAI_COMPATIBLE#0"'
    opened = f'gateway_circuit_transitions_total{{{labels},to="open"}} '
    before = _metric(gateway, opened)

    [_post(gateway, tenant.key) for _ in range(6)]

    assert _metric(gateway, opened) == before + 1
    assert _metric(gateway, f"gateway_circuit_state{{{labels}}} ") == 1.0
