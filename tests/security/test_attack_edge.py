"""Attacks on the edge of the gateway: metrics, request bodies before auth, Host names, settings.

Every request here goes through the real ASGI app served by uvicorn on loopback.
"""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User

from groups.audit import SYSTEM_ACTOR
from groups.models import Workspace
from groups.services import custom_domain_add
from tests.fakes.model_server import FakeModelServerThread
from tests.proxy.conftest import SLUG, GatewayThread, Tenant, compatible_target, tenant_build

CHAT = {"model": SLUG, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def _raw_request(gateway: GatewayThread, head: str, body: bytes = b"") -> socket.socket:
    """An open connection on which `head` (and `body`) were sent, the request left unfinished."""
    host, port = gateway.url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=5)
    conn.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
    return conn


def _response_head(conn: socket.socket) -> str:
    """Status line and headers of the response (waits at most the socket timeout)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode("latin-1")


def _response(conn: socket.socket) -> str:
    data = b""
    try:
        while chunk := conn.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data.decode("latin-1")


# --- /metrics -------------------------------------------------------------------------------------


def test_metrics_are_not_served_to_a_client_behind_a_proxy_without_the_token(gateway, tenant):
    httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {tenant.key}"},
    )

    forwarded = httpx.get(f"{gateway.url}/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    rfc7239 = httpx.get(f"{gateway.url}/metrics", headers={"Forwarded": "for=203.0.113.9"})
    direct = httpx.get(f"{gateway.url}/metrics")

    for response in (forwarded, rfc7239):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "metrics_unauthorized"
        assert SLUG not in response.text
    assert direct.status_code == 200
    assert SLUG in direct.text


def test_metrics_need_the_configured_token_even_from_loopback(gateway, settings):
    settings.GATEWAY_METRICS_TOKEN = "metrics-token-0451"

    missing = httpx.get(f"{gateway.url}/metrics")
    wrong = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": "Bearer metrics-token"})
    right = httpx.get(
        f"{gateway.url}/metrics",
        headers={"Authorization": "Bearer metrics-token-0451", "X-Forwarded-For": "203.0.113.9"},
    )

    assert missing.status_code == wrong.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert wrong.json()["error"]["code"] == "metrics_unauthorized"
    assert right.status_code == 200
    assert "gateway_streams_in_flight" in right.text


# --- bodies read before any authentication --------------------------------------------------------


def test_endless_chunked_post_to_admin_login_is_cut_off_at_the_limit(gateway, settings):
    settings.GATEWAY_MAX_CONTROL_BODY_BYTES = 64 * 1024
    head = "POST /admin/login/ HTTP/1.1\nHost: 127.0.0.1\nTransfer-Encoding: chunked\n"
    chunk = b"8000\r\n" + b"a" * 0x8000 + b"\r\n"

    # 96 KiB sent and the body never ends: only the bound can produce an answer.
    conn = _raw_request(gateway, head, chunk * 3)
    response = _response(conn)
    conn.close()

    assert response.startswith("HTTP/1.1 413")
    assert '"code": "request_too_large"' in response


def test_huge_declared_body_is_refused_before_it_is_sent(gateway):
    head = (
        "POST /v1/gateway/groups HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json\n"
        "Content-Length: 10000000000\nExpect: 100-continue\n"
    )

    conn = _raw_request(gateway, head)
    response = _response_head(conn)
    conn.close()

    assert response.startswith("HTTP/1.1 413")
    assert "100 Continue" not in response


def test_slow_uploads_do_not_pin_every_django_thread(gateway):
    head = "POST /admin/login/ HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 1000\n"
    trickles = [_raw_request(gateway, head, b"username=") for _ in range(12)]

    health = httpx.get(f"{gateway.url}/healthz", timeout=5)

    for conn in trickles:
        conn.close()
    assert health.json() == {"status": "ok"}


def test_admin_login_form_still_posts_under_the_body_bound(gateway):
    User.objects.create_superuser("staff", password="pw-123456789")

    with httpx.Client(base_url=gateway.url) as client:
        client.get("/admin/login/")
        response = client.post(
            "/admin/login/?next=/admin/",
            data={
                "username": "staff",
                "password": "pw-123456789",
                "csrfmiddlewaretoken": client.cookies["csrftoken"],
            },
        )

    assert response.status_code == 302
    assert response.headers["location"] == "/admin/"


# --- Host names -----------------------------------------------------------------------------------


@pytest.fixture
def globex(
    gateway: GatewayThread, other_workspace: Workspace, upstream: FakeModelServerThread
) -> Tenant:
    """A second tenant, `globex/llama` on the same fake upstream."""
    return tenant_build(
        workspace=other_workspace, targets=[compatible_target(upstream.url)], slug="globex/llama"
    )


@pytest.mark.parametrize("host", ["api.acme.com.", "API.Acme.COM:443", "api.acme.com.:8000"])
def test_host_spelling_does_not_skip_the_custom_domain_check(tenant, globex, gateway, host):
    custom_domain_add(workspace=tenant.workspace, host="api.acme.com", actor=SYSTEM_ACTOR)
    body = {**CHAT, "model": "globex/llama"}

    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {globex.key}", "Host": host},
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_custom_domain_serves_inference_and_health_only(tenant, gateway, settings):
    custom_domain_add(workspace=tenant.workspace, host="api.acme.com", actor=SYSTEM_ACTOR)
    settings.GATEWAY_METRICS_TOKEN = "metrics-token-0451"
    on_domain: dict[str, Any] = {"Host": "api.acme.com."}
    auth = {"Authorization": "Bearer metrics-token-0451"}

    with httpx.Client(base_url=gateway.url, headers=on_domain) as client:
        hidden = {
            path: client.get(path, headers=auth)
            for path in (
                "/admin/login/",
                "/v1/gateway/groups",
                "/v1/gateway/docs",
                "/v1/gateway/openapi.json",
                "/metrics",
                "/static/admin/css/base.css",
            )
        }
        login = client.post("/admin/login/", data={"username": "x", "password": "y"})
        health = client.get("/healthz")
        chat = client.post(
            "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {tenant.key}"}
        )

    assert {path: r.status_code for path, r in hidden.items()} == dict.fromkeys(hidden, 404)
    assert all(r.json()["error"]["code"] == "not_found" for r in hidden.values())
    assert login.status_code == 404
    assert health.status_code == 200
    assert chat.status_code == 200
    assert httpx.get(f"{gateway.url}/admin/login/").status_code == 200
