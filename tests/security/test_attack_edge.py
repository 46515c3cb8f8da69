"""Attacks on the edge of the gateway: metrics, request bodies before auth, Host names, settings.

Every request here goes through the real ASGI app served by uvicorn on loopback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from billing.models import WebhookSecret
from billing.services.webhooks import webhook_endpoint_create
from gateway_project.demo import DemoCredentials, demo_ensure
from gateway_project.env import BASE_DIR
from gateway_project.kernel.encryption import decrypt
from groups.models import Secret, Workspace
from groups.services import custom_domain_add, secret_create
from groups.services.audit import SYSTEM_ACTOR
from tests.fakes.model_server import FakeModelServerThread
from tests.proxy.conftest import SLUG, GatewayThread, Tenant, compatible_target, tenant_build
from tests.waiting import wait_until

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
    """The response on `conn`: read until its Content-Length is in, the peer closes or the socket
    times out (a server keeping the connection open after answering is not waited out)."""
    data = b""
    try:
        while not _complete(data) and (chunk := conn.recv(65536)):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data.decode("latin-1")


def _complete(data: bytes) -> bool:
    head, ended, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:[ \t]*(\d+)", head)
    return bool(ended) and length is not None and len(body) >= int(length.group(1))


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
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "metrics_forbidden"
        assert response.json()["error"]["type"] == "permission_error"
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
    assert wrong.json()["error"]["type"] == "authentication_error"
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


# --- production settings and secrets at rest ------------------------------------------------------

STRONG_SECRET_KEY = "Kq3x-strong-production-secret-key-7f2a9c4e1b8d6f0a3c5e7b9d"


def _settings_of(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A fresh process loading the settings under `env`; prints a few of them as JSON."""
    names = ("SECRET_KEY", "ALLOWED_HOSTS", "GATEWAY_DEBUG", "GATEWAY_PRODUCTION")
    base = {k: v for k, v in os.environ.items() if k not in names}
    script = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, "
        "s.CSRF_COOKIE_SECURE, s.SECURE_PROXY_SSL_HEADER]))"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        env={
            **base,
            "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
            "GATEWAY_VAR_DIR": str(tmp_path),
            **env,
        },
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_production_refuses_to_start_accepting_any_host(tmp_path):
    env = {"GATEWAY_PRODUCTION": "1", "SECRET_KEY": STRONG_SECRET_KEY}

    wildcard = _settings_of(tmp_path, **env, ALLOWED_HOSTS="*")
    unset = _settings_of(tmp_path, **env)
    listed = _settings_of(tmp_path, **env, ALLOWED_HOSTS="gateway.example.com")

    assert wildcard.returncode != 0 and unset.returncode != 0
    assert "ALLOWED_HOSTS must list the gateway's own host names" in wildcard.stderr
    assert "ALLOWED_HOSTS must list" in unset.stderr
    assert listed.returncode == 0, listed.stderr


def test_production_refuses_to_start_with_a_default_secret_key(tmp_path):
    env = {"GATEWAY_PRODUCTION": "1", "ALLOWED_HOSTS": "gateway.example.com"}

    sample = _settings_of(tmp_path, **env, SECRET_KEY="test-secret-key-not-for-production")
    short = _settings_of(tmp_path, **env, SECRET_KEY="hunter2")
    missing = _settings_of(tmp_path, **env)

    for refused in (sample, short):
        assert refused.returncode != 0
        assert "SECRET_KEY must be a random value of at least 50 characters" in refused.stderr
    assert missing.returncode != 0 and "SECRET_KEY must be set" in missing.stderr


def test_production_sends_hsts_with_secure_cookies_behind_a_tls_proxy(tmp_path):
    loaded = _settings_of(
        tmp_path,
        GATEWAY_PRODUCTION="1",
        SECRET_KEY=STRONG_SECRET_KEY,
        ALLOWED_HOSTS="gateway.example.com",
        GATEWAY_SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto",
    )

    assert loaded.returncode == 0, loaded.stderr
    hsts, session_secure, csrf_secure, proxy_header = json.loads(loaded.stdout)
    assert hsts == 31536000
    assert session_secure and csrf_secure
    assert proxy_header == ["HTTP_X_FORWARDED_PROTO", "https"]


def test_generated_secret_key_is_never_world_readable_even_for_a_moment(tmp_path):
    # umask 0 and a process killed right after writing the file (its chmod never runs):
    # only a file created 0600 stays private.
    script = (
        "import os, pathlib\n"
        "os.umask(0)\n"
        "def killed(*args, **kwargs):\n"
        "    raise SystemExit('killed before chmod')\n"
        "os.chmod = pathlib.Path.chmod = killed\n"
        "import django\n"
        "django.setup()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env.update(GATEWAY_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="gateway_project.settings")

    subprocess.run([sys.executable, "-c", script], env=env, cwd=BASE_DIR, timeout=60, check=False)

    generated = tmp_path / "secret_key"
    assert len(generated.read_text().strip()) >= 50
    assert stat.S_IMODE(generated.stat().st_mode) == 0o600
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".secret_key")]


def test_demo_credentials_file_is_never_world_readable_even_for_a_moment(db, tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_VAR_DIR", str(tmp_path))
    stale = tmp_path / "demo.json"
    gone = {field.name: "gone" for field in dataclasses.fields(DemoCredentials)}
    stale.write_text(json.dumps(gone))
    stale.chmod(0o644)  # left by an older run whose workspace is gone

    def killed(*args: Any, **kwargs: Any) -> None:
        raise SystemExit("killed before chmod")

    monkeypatch.setattr(os, "chmod", killed)
    monkeypatch.setattr(Path, "chmod", killed)
    previous = os.umask(0)
    try:
        with contextlib.suppress(SystemExit):
            demo_ensure(model_base_url="http://127.0.0.1:9/v1", webhook_url=None)
    finally:
        os.umask(previous)

    assert stat.S_IMODE(stale.stat().st_mode) == 0o600
    assert "management_key" in stale.read_text()


@pytest.fixture
def stored_secrets(workspace: Workspace) -> tuple[Secret, WebhookSecret]:
    """One provider secret and one webhook signing secret, encrypted under the current key."""
    secret = secret_create(
        workspace=workspace, name="upstream", value="provider-credential-0451", actor=SYSTEM_ACTOR
    )
    endpoint, _plain = webhook_endpoint_create(
        workspace=workspace, url="http://127.0.0.1:9/hooks", actor=SYSTEM_ACTOR
    )
    return secret, WebhookSecret.objects.get(endpoint=endpoint)


def test_secrets_under_a_retired_encryption_key_are_moved_to_the_new_one(stored_secrets, settings):
    secret, webhook_secret = stored_secrets
    webhook_plain = decrypt(webhook_secret.ciphertext)
    settings.GATEWAY_ENCRYPTION_KEYS_PREVIOUS = [settings.GATEWAY_ENCRYPTION_KEY]
    settings.GATEWAY_ENCRYPTION_KEY = "a-new-encryption-key-set-apart-from-secret-key"
    assert decrypt(Secret.objects.get(pk=secret.pk).ciphertext) == "provider-credential-0451"

    first, again = io.StringIO(), io.StringIO()
    call_command("secrets_reencrypt", stdout=first)
    call_command("secrets_reencrypt", stdout=again)
    settings.GATEWAY_ENCRYPTION_KEYS_PREVIOUS = []

    assert "provider secrets: 1 re-encrypted, 0 already current" in first.getvalue()
    assert "webhook signing secrets: 1 re-encrypted, 0 already current" in first.getvalue()
    assert "provider secrets: 0 re-encrypted, 1 already current" in again.getvalue()
    assert decrypt(Secret.objects.get(pk=secret.pk).ciphertext) == "provider-credential-0451"
    assert decrypt(WebhookSecret.objects.get(pk=webhook_secret.pk).ciphertext) == webhook_plain


def test_reencrypt_changes_nothing_when_a_secret_cannot_be_decrypted(stored_secrets, settings):
    secret, webhook_secret = stored_secrets
    before = bytes(Secret.objects.get(pk=secret.pk).ciphertext)
    settings.GATEWAY_ENCRYPTION_KEY = "a-new-key-whose-predecessor-was-forgotten"

    with pytest.raises(CommandError, match="Nothing changed"):
        call_command("secrets_reencrypt", stdout=io.StringIO())

    assert bytes(Secret.objects.get(pk=secret.pk).ciphertext) == before
    assert bytes(WebhookSecret.objects.get(pk=webhook_secret.pk).ciphertext) == bytes(
        webhook_secret.ciphertext
    )


# --- request heads --------------------------------------------------------------------------------


@pytest.fixture
def gunicorn_gateway(tmp_path: Path) -> Iterator[str]:
    """The production command line: gunicorn with the gateway's worker class, one worker."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "REDIS_URL": django_settings.REDIS_URL, "GATEWAY_LOG_LEVEL": "WARNING"}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'gateway.sqlite3'}"
    command = [
        *(sys.executable, "-m", "gunicorn", "-k", "gateway_project.worker.GatewayWorker"),
        *("-w", "1", "-b", f"127.0.0.1:{port}", "gateway_project.asgi:application"),
    ]
    master = subprocess.Popen(command, cwd=BASE_DIR, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{url}/healthz"), timeout=30, interval=0.1)
        yield url
    finally:
        master.terminate()
        master.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_endless_request_headers_are_cut_off_before_any_app_runs(gunicorn_gateway):
    host, port = gunicorn_gateway.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=5)
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ")
    sent, refused = 0, False

    # One header value that never ends: a worker without a bound buffers all of it.
    try:
        while sent < 8 * 1024 * 1024:
            conn.sendall(b"a" * 16384)
            sent += 16384
    except OSError:
        refused = True
    response = _response(conn)
    conn.close()

    assert refused or response
    assert response.startswith("HTTP/1.1 431")
    assert '"code": "request_header_too_large"' in response
    assert sent < 8 * 1024 * 1024
    headers = {f"X-Pad-{n}": "a" * 1000 for n in range(20)}
    assert httpx.get(f"{gunicorn_gateway}/healthz", headers=headers).status_code == 200


def test_changing_secret_key_cannot_silently_invalidate_every_api_key(tmp_path):
    old, new = STRONG_SECRET_KEY, STRONG_SECRET_KEY[::-1]

    following = _settings_of(tmp_path, SECRET_KEY=new, SECRET_KEY_FALLBACKS=old)
    separated = _settings_of(
        tmp_path,
        SECRET_KEY=new,
        SECRET_KEY_FALLBACKS=old,
        GATEWAY_KEY_PEPPER=old,
        GATEWAY_ENCRYPTION_KEY=old,
    )

    assert following.returncode != 0
    assert "GATEWAY_KEY_PEPPER and GATEWAY_ENCRYPTION_KEY still follow SECRET_KEY" in (
        following.stderr
    )
    assert separated.returncode == 0, separated.stderr
