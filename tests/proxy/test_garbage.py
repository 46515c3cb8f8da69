"""A request leaves nothing to Python's cyclic garbage collector: reference counting frees what it
allocated as it ends. Objects left in reference cycles wait for a collection, and a collection walks
every young object while the event loop stands still (some 17 ms a collection, 20 us a request,
when each request left its response cycle behind)."""

from __future__ import annotations

import gc
import http.client
import json
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from tests.proxy.conftest import SLUG, GatewayThread, compatible_target, tenant_build

CHAT = "/v1/chat/completions"
Send = Callable[[http.client.HTTPConnection], int]


def _garbage_per_request(gateway: GatewayThread, send: Send) -> float:
    """Objects found in cycles per request, the least of three measures: after 60 requests on one
    connection less after 10, over the 50 more. A request that leaves its state behind leaves
    tens of objects every time; the test's own servers and the gateway's background loops leave
    a few dozen now and then, which one of the measures escapes."""
    connection = http.client.HTTPConnection(urlsplit(gateway.url).netloc, timeout=10)
    try:
        for _ in range(5):  # warm: caches filled, pools opened
            send(connection)
        measures = []
        for _ in range(3):
            found = []
            for requests in (10, 60):
                gc.collect()
                gc.disable()
                try:
                    for _ in range(requests):
                        send(connection)
                    found.append(gc.collect())
                finally:
                    gc.enable()
            measures.append((found[1] - found[0]) / 50)
        return min(measures)
    finally:
        connection.close()


def _sender(key: str, *, stream: bool = False, expect: int = 200) -> Send:
    body = {"model": SLUG, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    data = json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def send(connection: http.client.HTTPConnection) -> int:
        connection.request("POST", CHAT, body=data, headers=headers)
        response = connection.getresponse()
        response.read()
        assert response.status == expect
        return response.status

    return send


@pytest.mark.parametrize("stream", [False, True])
def test_an_answered_request_leaves_no_cycles(gateway, tenant, stream):
    assert _garbage_per_request(gateway, _sender(tenant.key, stream=stream)) < 2


def test_a_refused_request_leaves_no_cycles(gateway, workspace, upstream):
    limits = {"rate_limits": [{"type": "REQUEST", "unit": "MINUTE", "threshold": 1}]}
    tenant = tenant_build(
        workspace=workspace, targets=[compatible_target(upstream.url)], limits=limits
    )
    first = http.client.HTTPConnection(urlsplit(gateway.url).netloc, timeout=10)
    _sender(tenant.key)(first)  # the one request the limit lets through
    first.close()

    assert _garbage_per_request(gateway, _sender(tenant.key, expect=429)) < 2


def test_an_upstream_error_leaves_no_cycles(gateway, workspace, unavailable_upstream):
    tenant = tenant_build(
        workspace=workspace, targets=[compatible_target(unavailable_upstream.url)]
    )

    assert _garbage_per_request(gateway, _sender(tenant.key, expect=503)) < 2


def test_a_request_answered_after_a_fallback_leaves_no_cycles(
    gateway, workspace, unavailable_upstream, upstream, settings
):
    settings.GATEWAY_CIRCUIT_FAILURES = 10**6  # every request tries the failing target first
    targets = [compatible_target(unavailable_upstream.url), compatible_target(upstream.url)]
    tenant = tenant_build(workspace=workspace, targets=targets)

    assert _garbage_per_request(gateway, _sender(tenant.key)) < 2
    assert unavailable_upstream.hits > 60
