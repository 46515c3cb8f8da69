"""Every inference error in the one envelope, with X-Request-ID, and the fallback rules."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from billing.models import UsageEvent
from billing.services.ingest import usage_ingest
from tests.proxy.conftest import SLUG, compatible_target, tenant_build

CHAT = "/v1/chat/completions"


def _post(gateway, key, body, **kwargs):
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    return httpx.post(f"{gateway.url}{CHAT}", json=body, headers=headers, timeout=10, **kwargs)


def _chat(**extra):
    return {"model": SLUG, "messages": [{"role": "user", "content": "hi"}], **extra}


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def _error(response):
    assert response.headers["x-request-id"]
    return response.json()["error"]


def test_refused_connection_is_502(gateway, workspace):
    tenant = tenant_build(workspace=workspace, targets=[compatible_target(_closed_port_url())])

    response = _post(gateway, tenant.key, _chat())

    assert response.status_code == 502
    assert _error(response)["code"] == "bad_gateway"
    assert usage_ingest() == 0


def test_upstream_slower_than_the_first_byte_timeout_is_504(gateway, tenant, settings):
    settings.GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT = 0.2

    response = _post(gateway, tenant.key, _chat(fake={"first_byte_delay_ms": 2000}))

    assert response.status_code == 504
    assert _error(response)["code"] == "upstream_timeout"


def test_upstream_json_error_is_passed_through(gateway, tenant):
    response = _post(gateway, tenant.key, _chat(fake={"status": 422}))

    assert response.status_code == 422
    assert response.json()["error"]["message"] == "Injected failure (422)."
    assert response.headers["x-request-id"]


def test_upstream_non_json_error_is_wrapped(gateway, tenant):
    response = _post(gateway, tenant.key, _chat(fake={"status": 500, "body": "<html>oops</html>"}))

    assert response.status_code == 500
    assert _error(response)["code"] == "upstream_error"


def test_first_target_503_falls_back_to_the_second(
    gateway, workspace, unavailable_upstream, backup_upstream
):
    targets = [
        compatible_target(unavailable_upstream.url),
        compatible_target(backup_upstream.url, "b"),
    ]
    tenant = tenant_build(workspace=workspace, targets=targets)

    response = _post(gateway, tenant.key, _chat())

    assert response.status_code == 200 and response.json()["model"] == SLUG
    assert backup_upstream.requests[-1].json["model"] == "b"


def test_last_target_503_is_passed_through(gateway, workspace, unavailable_upstream):
    tenant = tenant_build(
        workspace=workspace, targets=[compatible_target(unavailable_upstream.url)]
    )

    response = _post(gateway, tenant.key, _chat())

    assert response.status_code == 503
    assert response.json()["error"]["message"] == "overloaded"
    assert usage_ingest() == 0


def test_refused_first_target_falls_back_to_the_second(gateway, workspace, backup_upstream):
    targets = [
        compatible_target(_closed_port_url()),
        compatible_target(backup_upstream.url, "backup"),
    ]
    tenant = tenant_build(workspace=workspace, targets=targets)

    response = _post(gateway, tenant.key, _chat())

    assert response.status_code == 200 and response.json()["model"] == SLUG
    assert backup_upstream.requests[-1].json["model"] == "backup"
    usage_ingest()
    assert UsageEvent.objects.get().target == "OPENAI_COMPATIBLE#1"


def test_body_over_the_limit_is_413(gateway, tenant, settings):
    settings.GATEWAY_MAX_BODY_BYTES = 1000

    response = _post(gateway, tenant.key, _chat(padding="x" * 2000))

    assert response.status_code == 413
    assert _error(response)["code"] == "request_too_large"


def test_chunked_body_over_the_limit_is_413(gateway, tenant, settings):
    settings.GATEWAY_MAX_BODY_BYTES = 1000
    data = json.dumps(_chat(padding="x" * 2000)).encode()

    response = httpx.post(
        f"{gateway.url}{CHAT}",
        content=iter([data[:500], data[500:]]),
        headers={"Authorization": f"Bearer {tenant.key}", "Content-Type": "application/json"},
    )

    assert response.status_code == 413


def test_non_json_content_type_is_415(gateway, tenant):
    response = httpx.post(
        f"{gateway.url}{CHAT}",
        content=b"model=acme/llama",
        headers={"Authorization": f"Bearer {tenant.key}", "Content-Type": "text/plain"},
    )

    assert response.status_code == 415
    assert _error(response)["code"] == "unsupported_media_type"


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"'])
def test_malformed_or_non_object_json_is_400(gateway, tenant, raw):
    response = httpx.post(
        f"{gateway.url}{CHAT}",
        content=raw,
        headers={"Authorization": f"Bearer {tenant.key}", "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert _error(response)["code"] == "invalid_json"


def test_missing_model_is_400(gateway, tenant):
    response = _post(gateway, tenant.key, {"messages": []})

    assert response.status_code == 400
    assert _error(response)["param"] == "model"


@pytest.mark.parametrize("metadata", ["not json", "[1]", json.dumps({"k": "v" * 5000})])
def test_invalid_request_metadata_is_400(gateway, tenant, metadata):
    response = _post(gateway, tenant.key, _chat(), headers={"X-Request-Metadata": metadata})

    assert response.status_code == 400
    assert _error(response)["code"] == "invalid_request_metadata"


def test_request_metadata_is_stripped_upstream_and_kept_on_the_event(gateway, tenant, upstream):
    metadata = {"session": "s-1", "trace": 7}

    response = _post(
        gateway, tenant.key, _chat(), headers={"X-Request-Metadata": json.dumps(metadata)}
    )

    assert response.status_code == 200
    assert "x-request-metadata" not in upstream.requests[-1].headers
    assert "authorization" not in upstream.requests[-1].headers  # the target has no secret
    assert upstream.requests[-1].headers["x-request-id"] == response.headers["x-request-id"]
    usage_ingest()
    assert UsageEvent.objects.get().request_metadata == metadata


def test_wrong_method_is_405(gateway, tenant):
    response = httpx.get(f"{gateway.url}{CHAT}", headers={"Authorization": f"Bearer {tenant.key}"})

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert _error(response)["code"] == "method_not_allowed"


def test_unknown_inference_route_is_404(gateway, tenant):
    response = httpx.post(
        f"{gateway.url}/v1/nothing", headers={"Authorization": f"Bearer {tenant.key}"}
    )

    assert response.status_code == 404
    assert _error(response)["code"] == "unknown_route"


def test_management_key_is_rejected_on_inference(gateway, tenant):
    from groups.services.audit import SYSTEM_ACTOR
    from keys.services import management_key_create

    _, plaintext = management_key_create(workspace=tenant.workspace, actor=SYSTEM_ACTOR)

    response = _post(gateway, plaintext, _chat())

    assert response.status_code == 401
    assert _error(response)["code"] == "invalid_api_key"


def test_unknown_body_fields_pass_through_untouched(gateway, tenant, upstream):
    extra = {
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "seed": 7,
        "logprobs": True,
        "n": 1,
        "vendor_x": {"nested": [1, 2]},
    }

    response = _post(gateway, tenant.key, _chat(**extra))

    assert response.status_code == 200
    sent = upstream.requests[-1].json
    assert {k: sent[k] for k in extra} == extra
    assert sent["messages"] == _chat()["messages"] and sent["model"] == "fake-model"


def test_upstream_gets_the_targets_credential_never_the_clients_key(gateway, workspace, upstream):
    from groups.services import secret_create
    from groups.services.audit import SYSTEM_ACTOR

    secret = secret_create(
        workspace=workspace, name="vllm", value="upstream-secret", actor=SYSTEM_ACTOR
    )
    target = {**compatible_target(upstream.url), "secret_id": secret.id}
    tenant = tenant_build(workspace=workspace, targets=[target])

    response = _post(gateway, tenant.key, _chat())

    assert response.status_code == 200
    assert upstream.requests[-1].headers["authorization"] == "Bearer upstream-secret"


def test_failed_request_gives_its_limit_reservation_back(gateway, workspace):
    limits = {"rate_limits": [{"type": "REQUEST", "unit": "MINUTE", "threshold": 1}]}
    target = compatible_target(_closed_port_url())
    tenant = tenant_build(workspace=workspace, targets=[target], limits=limits)

    statuses = [_post(gateway, tenant.key, _chat()).status_code for _ in range(3)]

    assert statuses == [502, 502, 502]


def test_successful_request_keeps_its_limit_charge(gateway, workspace, upstream):
    limits = {"rate_limits": [{"type": "REQUEST", "unit": "MINUTE", "threshold": 1}]}
    tenant = tenant_build(
        workspace=workspace, targets=[compatible_target(upstream.url)], limits=limits
    )

    statuses = [_post(gateway, tenant.key, _chat()).status_code for _ in range(2)]

    assert statuses == [200, 429]


def test_api_key_scheme_is_accepted(gateway, tenant):
    response = httpx.post(
        f"{gateway.url}{CHAT}", json=_chat(), headers={"Authorization": f"Api-Key {tenant.key}"}
    )

    assert response.status_code == 200


def test_baseten_target_uses_the_url_template_and_the_workspace_secret(
    gateway, workspace, upstream, settings
):
    from groups.services import secret_create
    from groups.services.audit import SYSTEM_ACTOR

    settings.GATEWAY_BASETEN_URL_TEMPLATE = upstream.url  # placeholders are optional
    secret = secret_create(workspace=workspace, name="bt", value="bt-key", actor=SYSTEM_ACTOR)
    target = {"provider": "BASETEN", "model_id": "abcd1234", "secret_id": secret.id}
    tenant = tenant_build(workspace=workspace, targets=[target])

    response = _post(gateway, tenant.key, _chat())

    assert response.status_code == 200 and response.json()["model"] == SLUG
    assert upstream.requests[-1].headers["authorization"] == "Bearer bt-key"
    assert upstream.requests[-1].json["model"] == "model"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_upstream_outside_the_allowlist_is_refused_at_connect_time(
    gateway, workspace, upstream, settings, host
):
    url = upstream.url.replace("127.0.0.1", host)
    tenant = tenant_build(workspace=workspace, targets=[compatible_target(url)])
    settings.GATEWAY_UPSTREAM_ALLOWLIST = []

    response = _post(gateway, tenant.key, _chat())

    assert response.status_code == 502
    assert upstream.requests == []
