"""POST /v1/responses (OpenAI's Responses API) and GET /v1/models/{slug} through the gateway."""

from __future__ import annotations

import json

import httpx
import pytest

from billing.models import UsageEvent
from billing.services.ingest import usage_ingest
from tests.proxy.conftest import SLUG, StaticUpstream, compatible_target, tenant_build
from tests.waiting import wait_until

RESPONSES = "/v1/responses"


def _post(gateway, key, body, path=RESPONSES):
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{gateway.url}{path}", json=body, headers=headers, timeout=10)


def _stream(gateway, key, body):
    headers = {"Authorization": f"Bearer {key}"}
    body = {**body, "stream": True}
    return httpx.stream("POST", f"{gateway.url}{RESPONSES}", json=body, headers=headers, timeout=10)


def _ask(**extra):
    return {"model": SLUG, "input": "tell me a story", **extra}


def _events(response):
    return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]


def _event():
    wait_until(lambda: usage_ingest() or UsageEvent.objects.exists(), timeout=5)
    return UsageEvent.objects.get()


def test_a_response_reaches_the_upstream_with_its_model_and_comes_back_with_the_slug(
    gateway, tenant, upstream
):
    response = _post(gateway, tenant.key, _ask(max_output_tokens=3))

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "response" and body["model"] == SLUG
    assert body["output"][0]["content"][0]["text"] == "tok0 tok1 tok2"
    sent = upstream.requests[-1]
    assert sent.path == "/v1/responses"
    assert sent.json["model"] == "fake-model" and "stream_options" not in sent.json


def test_a_response_records_one_usage_event_with_its_tokens(gateway, tenant):
    response = _post(gateway, tenant.key, _ask(max_output_tokens=5))

    event = _event()
    assert response.status_code == 200
    assert (event.input_tokens, event.output_tokens, event.usage_estimated) == (4, 5, False)
    assert event.status == "completed" and event.request_id == response.headers["x-request-id"]


def test_a_streamed_response_keeps_its_events_and_bills_the_completed_usage(gateway, tenant):
    with _stream(gateway, tenant.key, _ask(max_output_tokens=50, fake={"tokens": 6})) as response:
        events = _events(response)

    assert response.status_code == 200
    assert events[0]["type"] == "response.created"
    assert events[0]["response"]["model"] == SLUG
    completed = events[-1]
    assert completed["type"] == "response.completed"
    assert completed["response"]["model"] == SLUG
    assert completed["response"]["usage"]["output_tokens"] == 6
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == "tok0 tok1 tok2 tok3 tok4 tok5"
    event = _event()
    assert (event.input_tokens, event.output_tokens, event.usage_estimated) == (4, 6, False)


def test_a_stream_without_usage_is_still_billed_by_estimate(gateway, tenant):
    with _stream(gateway, tenant.key, _ask(fake={"tokens": 7, "no_usage": True})) as response:
        events = _events(response)

    assert events[-1]["response"]["usage"] is None
    event = _event()
    assert event.usage_estimated and event.output_tokens >= 7


def test_a_client_leaving_a_streamed_response_is_billed_for_what_was_produced(
    gateway, tenant, upstream
):
    with _stream(gateway, tenant.key, _ask(fake={"tokens": 50, "delay_ms": 50})) as response:
        for line in response.iter_lines():
            if "tok2" in line:
                break
        record = upstream.requests[-1]

    wait_until(lambda: record.completed is False, timeout=5)
    event = _event()
    assert event.status == "cancelled" and 3 <= event.output_tokens <= record.chunks_sent


def test_a_limited_response_reserves_the_default_cap_when_it_names_none(
    gateway, workspace, upstream, settings
):
    settings.GATEWAY_DEFAULT_MAX_TOKENS = 64
    limits = {"usage_limits": [{"type": "TOKEN", "unit": "DAY", "threshold": 60}]}
    tenant = tenant_build(
        workspace=workspace, targets=[compatible_target(upstream.url)], limits=limits
    )

    refused = _post(gateway, tenant.key, _ask())
    capped = _post(gateway, tenant.key, _ask(max_output_tokens=5))

    assert refused.status_code == 429 and refused.headers["x-should-retry"] == "false"
    assert capped.status_code == 200
    assert upstream.requests[-1].json["max_output_tokens"] == 5
    assert _event().output_tokens == 5


def test_a_limited_response_cannot_ask_for_more_than_it_reserved(
    gateway, workspace, upstream, settings
):
    settings.GATEWAY_DEFAULT_MAX_TOKENS = 64
    limits = {"usage_limits": [{"type": "TOKEN", "unit": "DAY", "threshold": 100_000}]}
    tenant = tenant_build(
        workspace=workspace, targets=[compatible_target(upstream.url)], limits=limits
    )

    response = _post(gateway, tenant.key, _ask(max_output_tokens=0, max_tokens=10**6))
    too_many = _post(gateway, tenant.key, _ask(max_output_tokens=10**9))

    assert response.status_code == 200
    sent = upstream.requests[-1].json
    assert (sent["max_output_tokens"], sent["max_tokens"]) == (64, 64)
    assert _event().output_tokens == 64
    assert too_many.status_code == 400
    assert too_many.json()["error"]["param"] == "max_output_tokens"


def test_a_background_response_is_refused(gateway, tenant, upstream):
    response = _post(gateway, tenant.key, _ask(background=True))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_parameter"
    assert response.json()["error"]["param"] == "background"
    assert not upstream.requests


@pytest.mark.parametrize("status", [404, 405])
def test_a_baseten_target_without_the_responses_api_is_a_clear_400(
    gateway, workspace, settings, status
):
    from groups.services import secret_create
    from groups.services.audit import SYSTEM_ACTOR

    missing = StaticUpstream(status, b"Not Found", content_type="text/plain")
    settings.GATEWAY_BASETEN_URL_TEMPLATE = missing.url
    secret = secret_create(workspace=workspace, name="bt", value="bt-key", actor=SYSTEM_ACTOR)
    target = {"provider": "BASETEN", "model_id": "abcd1234", "secret_id": secret.id}
    tenant = tenant_build(workspace=workspace, targets=[target])

    response = _post(gateway, tenant.key, _ask())
    missing.stop()

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "responses_unsupported"
    assert usage_ingest() == 0


def test_a_baseten_target_with_the_responses_api_passes_through(
    gateway, workspace, upstream, settings
):
    from groups.services import secret_create
    from groups.services.audit import SYSTEM_ACTOR

    settings.GATEWAY_BASETEN_URL_TEMPLATE = upstream.url
    secret = secret_create(workspace=workspace, name="bt", value="bt-key", actor=SYSTEM_ACTOR)
    target = {"provider": "BASETEN", "model_id": "abcd1234", "secret_id": secret.id}
    tenant = tenant_build(workspace=workspace, targets=[target])

    response = _post(gateway, tenant.key, _ask(max_output_tokens=2))

    assert response.status_code == 200 and response.json()["model"] == SLUG
    assert upstream.requests[-1].path == "/v1/responses"


def test_a_model_the_key_may_call_is_shown_in_openai_shape(gateway, tenant):
    response = httpx.get(
        f"{gateway.url}/v1/models/{SLUG}", headers={"Authorization": f"Bearer {tenant.key}"}
    )

    assert response.status_code == 200
    assert response.json() == {"id": SLUG, "object": "model", "created": 0, "owned_by": "acme"}


@pytest.mark.parametrize("slug", ["acme/missing", "globex/llama", "nothing"])
def test_a_model_the_key_may_not_call_is_a_404(gateway, tenant, other_workspace, upstream, slug):
    tenant_build(
        workspace=other_workspace,
        targets=[compatible_target(upstream.url)],
        slug="globex/llama",
        external_id="other",
    )

    response = httpx.get(
        f"{gateway.url}/v1/models/{slug}", headers={"Authorization": f"Bearer {tenant.key}"}
    )

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_a_model_needs_a_key_and_get(gateway, tenant):
    anonymous = httpx.get(f"{gateway.url}/v1/models/{SLUG}")
    posted = httpx.post(
        f"{gateway.url}/v1/models/{SLUG}", headers={"Authorization": f"Bearer {tenant.key}"}
    )

    assert anonymous.status_code == 401
    assert posted.status_code == 405 and posted.headers["allow"] == "GET"
