"""An admitted request's upstream call (its attempt plan, URL, headers and body with the caps its
admission adds) is drafted while the admission waits for Redis, once the worker knows the
endpoint's breaker states (after its first request). What the upstream receives is the same as
for a request whose call is built after the answer."""

from __future__ import annotations

import httpx
import pytest

from tests.proxy.conftest import SLUG, UPSTREAM_MODEL, compatible_target, tenant_build

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hi"}]


def _post(gateway, key: str, body: dict) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "X-Trace-Me": "kept"}
    return httpx.post(f"{gateway.url}{CHAT}", json=body, headers=headers, timeout=30)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_drafted_call_reaches_the_upstream_as_one_built_after_the_answer(
    gateway, token_limited, upstream, stream, settings
):
    settings.GATEWAY_CIRCUIT_STATE_TTL = 300  # the breakers, once read, stay known
    body = {"model": SLUG, "messages": MESSAGES, "temperature": 0.5, "stream": stream}

    # The first request reads the breakers from Redis (nothing drafted); the next are drafted.
    answers = [_post(gateway, token_limited.key, body) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    first, *drafted = upstream.requests
    for request in drafted:
        assert request.raw == first.raw
        assert request.path == first.path
        assert _without_request_id(request.headers) == _without_request_id(first.headers)
    assert first.json["model"] == UPSTREAM_MODEL
    assert first.json["max_tokens"] > 0  # the cap its admission reserved
    assert first.headers["x-trace-me"] == "kept"
    assert "authorization" not in first.headers or "Bearer " in first.headers["authorization"]
    if stream:
        assert first.json["stream_options"] == {"include_usage": True}
    ids = {request.headers["x-request-id"] for request in upstream.requests}
    assert ids == {answer.headers["x-request-id"] for answer in answers}


def test_a_refused_request_sends_nothing_upstream_though_its_call_was_drafted(
    gateway, workspace, upstream
):
    one_request = {"rate_limits": [{"type": "REQUEST", "unit": "MINUTE", "threshold": 1}]}
    tenant = tenant_build(
        workspace=workspace, targets=[compatible_target(upstream.url)], limits=one_request
    )
    body = {"model": SLUG, "messages": MESSAGES}

    admitted = _post(gateway, tenant.key, body)
    refused = _post(gateway, tenant.key, body)

    assert admitted.status_code == 200
    assert refused.status_code == 429
    assert len(upstream.requests) == 1


def _without_request_id(headers: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name != "x-request-id"}
