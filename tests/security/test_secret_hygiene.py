"""Keys and secrets never show up where they should not: only the one-time mint/add responses carry
a plaintext; logs (caplog at DEBUG and the JSON log handler: inference and management API lines),
error bodies, admin pages, the audit trail and the OpenAPI document never do. Runs every flow that
creates one, then greps everything."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import secrets
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from billing.models import WebhookEndpoint
from gateway_project.kernel.logs import JsonFormatter
from groups.models import AuditEvent, Secret, Workspace
from keys.models import ApiKey, ManagementKey
from tests.fakes.model_server import FakeModelServerThread
from tests.proxy.conftest import (  # noqa: F401 - fixtures reused from the proxy suite
    GatewayThread,
    gateway,
    upstream,
)

KEY_SHAPED = re.compile(r"(?:sky|gwm)_[0-9A-Za-z]{12}\.[0-9A-Za-z]{20,}|whsec_[A-Za-z0-9+/]{20,}")
MINTED_KEY = re.compile(r'id="minted-key">([^<]+)<')
WEBHOOK_SECRET = re.compile(r'class="webhook-secret">([^<]+)<')
PROVIDER_CREDENTIAL = "provider-credential-" + secrets.token_hex(16)


@dataclass
class Capture:
    """Response bodies seen, and each plaintext minted with the responses allowed to show it."""

    responses: list[tuple[str, bytes]] = field(default_factory=list)
    plaintexts: dict[str, set[str]] = field(default_factory=dict)  # plaintext -> allowed labels

    def seen(self, label: str, response: Any) -> Any:
        body = response.content if hasattr(response, "content") else bytes(response)
        self.responses.append((label, body))
        return response

    def minted(self, plaintext: str, *, shown_in: str | None = None) -> str:
        self.plaintexts.setdefault(plaintext, set()).update({shown_in} if shown_in else set())
        return plaintext


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The JSON log handler's output, at DEBUG, for the whole test (gateway threads included)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def admin_client() -> Client:
    user = User.objects.create_superuser("support", "support@example.com", "pw-123456789")
    client = Client()
    client.force_login(user)
    return client


def strong_key() -> str:
    alphabet = string.ascii_letters + string.digits
    return "lab_reg." + "".join(secrets.choice(alphabet) for _ in range(44))


def admin_flows(staff: Client, cap: Capture) -> dict[str, Any]:
    """Support staff onboard a tenant and create every kind of secret through the admin."""
    signing = Ed25519PrivateKey.generate()
    public = base64.b64encode(signing.public_key().public_bytes_raw()).decode()
    cap.seen(
        "workspace add",
        staff.post(
            "/admin/groups/workspace/add/", {"name": "Hygiene", "ed25519_public_key": public}
        ),
    )
    workspace = Workspace.objects.get(name="Hygiene")
    cap.seen(
        "onboard",
        staff.post(
            "/admin/groups/workspace/", {"action": "onboard", "_selected_action": [workspace.pk]}
        ),
    )
    cap.seen(
        "prefix",
        staff.post("/admin/groups/orgprefix/add/", {"workspace": workspace.pk, "prefix": "hyg"}),
    )
    cap.seen(
        "secret add",
        staff.post(
            "/admin/groups/secret/add/",
            {
                "workspace": workspace.pk,
                "name": "upstream",
                "value": cap.minted(PROVIDER_CREDENTIAL),
            },
        ),
    )
    secret = Secret.objects.get(workspace=workspace)
    cap.seen(
        "secret update",
        staff.post(
            f"/admin/groups/secret/{secret.pk}/change/",
            {"value": cap.minted(PROVIDER_CREDENTIAL + "-rotated")},
        ),
    )
    minted = cap.seen(
        "mint management key",
        staff.post(
            "/admin/keys/managementkey/add/",
            {"workspace": workspace.pk, "name": "ops", "scope": "MANAGE"},
            follow=True,
        ),
    )
    [manage_key] = MINTED_KEY.findall(minted.content.decode())
    cap.minted(manage_key, shown_in="mint management key")
    hook = cap.seen(
        "webhook add",
        staff.post(
            "/admin/billing/webhookendpoint/add/",
            {"workspace": workspace.pk, "url": "http://127.0.0.1:9/hook"},
            follow=True,
        ),
    )
    [hook_secret] = WEBHOOK_SECRET.findall(hook.content.decode())
    cap.minted(hook_secret, shown_in="webhook add")
    endpoint = WebhookEndpoint.objects.get(workspace=workspace)
    rotated = cap.seen(
        "webhook rotate",
        staff.post(
            "/admin/billing/webhookendpoint/",
            {"action": "rotate_secret", "_selected_action": [endpoint.pk], "confirm": "yes"},
            follow=True,
        ),
    )
    [new_secret] = WEBHOOK_SECRET.findall(rotated.content.decode())
    cap.minted(new_secret, shown_in="webhook rotate")
    return {"workspace": workspace, "manage_key": manage_key, "signing": signing, "secret": secret}


def api_flows(cap: Capture, env: dict[str, Any], upstream_url: str) -> dict[str, Any]:
    """The lab's backend builds an endpoint, a group and keys with the management key."""
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {env['manage_key']}")
    target = {
        "provider": "OPENAI_COMPATIBLE",
        "base_url": upstream_url,
        "target_model": "fake-model",
        "secret_id": env["secret"].id,
    }
    cap.seen(
        "endpoint",
        api.post(
            "/v1/gateway/endpoints", {"slug": "hyg/llama", "targets": [target]}, format="json"
        ),
    )
    model = {"slug": "hyg/llama", "rate_limits": [], "usage_limits": []}
    group = cap.seen(
        "group",
        api.post(
            "/v1/gateway/groups",
            {"metadata": {"external_entity_id": "c1"}, "models": [model]},
            format="json",
        ),
    ).json()
    keys_path = f"/v1/gateway/groups/{group['id']}/api_keys"
    key = cap.seen("mint api key", api.post(keys_path, {"name": "k"}, format="json")).json()
    cap.minted(key["api_key"], shown_in="mint api key")
    registered = cap.minted(strong_key())
    body = json.dumps({"key": registered, "name": "registered"}).encode()
    signature = base64.b64encode(env["signing"].sign(body)).decode()
    cap.seen(
        "register",
        api.post(
            keys_path + "/register",
            body,
            content_type="application/json",
            HTTP_X_SIGNATURE=signature,
        ),
    )
    cap.seen(
        "register again (duplicate)",
        api.post(
            keys_path + "/register",
            body,
            content_type="application/json",
            HTTP_X_SIGNATURE=signature,
        ),
    )
    user = cap.seen(
        "user",
        api.post("/v1/gateway/users", {"customer_id": "u1", "models": [model]}, format="json"),
    ).json()
    user_key = cap.seen(
        "mint user key", api.post(f"/v1/gateway/users/{user['id']}/api_keys", {}, format="json")
    ).json()
    cap.minted(user_key["api_key"], shown_in="mint user key")
    for path in (
        keys_path,
        f"{keys_path}/{key['prefix']}",
        f"/v1/gateway/groups/{group['id']}",
        f"/v1/gateway/users/{user['id']}/api_keys",
        "/v1/gateway/endpoints",
    ):
        cap.seen(f"GET {path}", api.get(path))
    return {
        "api": api,
        "key": key["api_key"],
        "registered": registered,
        "keys_path": keys_path,
        "prefix": key["prefix"],
        "user_key": user_key["api_key"],
    }


def inference_flows(gateway_url: str, cap: Capture, keys: dict[str, Any], manage_key: str) -> None:
    """Customers call the gateway with good, forged and misplaced keys."""
    chat = {"model": "hyg/llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    forged = keys["key"][:17] + "A" * (len(keys["key"]) - 17)
    for label, key in (
        ("inference", keys["key"]),
        ("registered inference", keys["registered"]),
        ("forged key", forged),
        ("management key on inference", manage_key),
    ):
        for stream in (False, True):
            cap.seen(
                label,
                httpx.post(
                    f"{gateway_url}/v1/chat/completions",
                    json={**chat, "stream": stream},
                    headers={"Authorization": f"Bearer {key}"},
                ),
            )
    cap.seen(
        "models",
        httpx.get(
            f"{gateway_url}/v1/models", headers={"Authorization": f"Bearer {keys['user_key']}"}
        ),
    )
    api = keys["api"]
    cap.seen(
        "federated key on management",
        APIClient().get("/v1/gateway/groups", HTTP_AUTHORIZATION=f"Bearer {keys['key']}"),
    )
    cap.seen(
        "forged management key",
        APIClient().get(
            "/v1/gateway/groups", HTTP_AUTHORIZATION=f"Bearer {manage_key[:17]}{'B' * 40}"
        ),
    )
    cap.seen("revoke", api.delete(f"{keys['keys_path']}/{keys['prefix']}"))
    cap.seen(
        "revoked key on inference",
        httpx.post(
            f"{gateway_url}/v1/chat/completions",
            json=chat,
            headers={"Authorization": f"Bearer {keys['key']}"},
        ),
    )


def admin_pages(staff: Client, cap: Capture) -> None:
    """Every admin list and detail page a support engineer may open afterwards."""
    models = {
        "keys/apikey": ApiKey,
        "keys/managementkey": ManagementKey,
        "groups/secret": Secret,
        "billing/webhookendpoint": WebhookEndpoint,
        "groups/auditevent": AuditEvent,
    }
    for path, model in models.items():
        cap.seen(f"admin list {path}", staff.get(f"/admin/{path}/"))
        for pk in model._default_manager.values_list("pk", flat=True):
            cap.seen(f"admin page {path}", staff.get(f"/admin/{path}/{pk}/change/"))
    for path in (
        "/admin/",
        "/admin/groups/workspace/",
        "/admin/groups/group/",
        "/admin/routing/endpoint/",
        "/admin/billing/webhookdelivery/",
    ):
        cap.seen(f"admin {path}", staff.get(path))
    cap.seen("openapi", Client().get("/v1/gateway/openapi.json"))
    cap.seen("api docs", Client().get("/v1/gateway/docs"))


def sensitive_parts(plaintext: str) -> list[str]:
    """What must not leak: a key's secret (what follows its first dot; the prefix is public), or
    the whole value; any 8 characters of the secret count."""
    head, dot, tail = plaintext.partition(".")
    return [tail[i : i + 8] for i in range(0, len(tail) - 7, 4)] if dot else [plaintext]


def test_plaintexts_appear_only_in_their_one_time_responses(
    gateway: GatewayThread,  # noqa: F811
    upstream: FakeModelServerThread,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    json_log: io.StringIO,
) -> None:
    caplog.set_level(logging.DEBUG)
    cap, staff = Capture(), admin_client()

    env = admin_flows(staff, cap)
    keys = api_flows(cap, env, upstream.url)
    inference_flows(gateway.url, cap, keys, env["manage_key"])
    admin_pages(staff, cap)

    assert upstream.requests[0].headers["authorization"] == f"Bearer {PROVIDER_CREDENTIAL}-rotated"
    assert len(cap.plaintexts) == 8 and len(cap.responses) > 60
    logs = caplog.text + "\n".join(r.getMessage() for r in caplog.records) + json_log.getvalue()
    assert "inference request" in json_log.getvalue()  # the handler did capture the traffic
    assert "management request" in json_log.getvalue()  # and a line per management API call
    audit = json.dumps(list(AuditEvent.objects.values("before", "after", "actor")), default=str)
    stored = json.dumps(
        [
            list(ApiKey.objects.values()),
            list(ManagementKey.objects.values()),
            list(Secret.objects.values("name", "ciphertext")),
        ],
        default=str,
    )
    leaks = []
    for plaintext, allowed in cap.plaintexts.items():
        for part in sensitive_parts(plaintext):
            leaks += [f"log: {part[:8]}…"] if part in logs else []
            leaks += [f"audit: {part[:8]}…"] if part in audit else []
            leaks += [f"database: {part[:8]}…"] if part in stored else []
            leaks += [
                f"response {label!r}: {part[:8]}…"
                for label, body in cap.responses
                if label not in allowed and part.encode() in body
            ]
    assert leaks == []
    shown = [  # the control: the grep does find each plaintext where it is meant to be
        all(
            any(part.encode() in body for label, body in cap.responses if label in allowed)
            for part in sensitive_parts(plaintext)
        )
        for plaintext, allowed in cap.plaintexts.items()
        if allowed
    ]
    assert shown == [True] * 5


def test_the_openapi_document_has_no_key_or_secret_shaped_examples() -> None:
    schema = Client().get("/v1/gateway/openapi.json")
    docs = Client().get("/v1/gateway/docs")

    assert schema.status_code == 200 and docs.status_code == 200
    assert KEY_SHAPED.findall(schema.content.decode()) == []
    assert KEY_SHAPED.findall(docs.content.decode()) == []
