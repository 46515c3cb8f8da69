"""Every mutation through the API writes an audit row naming the management key."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.test import RequestFactory
from rest_framework.test import APIClient

from gateway_project.apidocs import handler500
from groups.models import AuditEvent, Workspace
from tests.api.conftest import TARGET, group_body, model

pytestmark = pytest.mark.django_db


def registration(api: APIClient, workspace: Workspace, group: dict) -> Any:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    Workspace.objects.filter(pk=workspace.pk).update(
        ed25519_public_key=base64.b64encode(public).decode()
    )
    raw = json.dumps({"key": "byok_Zq8Kd2Lm9.Pw4Xv7Bn3Hs6Tg1Yc5Jr0Ua8Ie2"}).encode()
    signature = base64.b64encode(private.sign(raw)).decode()
    return api.post(
        f"/v1/gateway/groups/{group['id']}/api_keys/register",
        raw,
        content_type="application/json",
        HTTP_X_SIGNATURE=signature,
    )


MUTATIONS: dict[str, Callable[..., Any]] = {
    "endpoint create": lambda api, ws, g, u, e: api.post(
        "/v1/gateway/endpoints", {"slug": "acme/new", "targets": [TARGET]}, format="json"
    ),
    "endpoint update": lambda api, ws, g, u, e: api.patch(
        f"/v1/gateway/endpoints/{e[1].id}", {"slug": "acme/renamed"}, format="json"
    ),
    "endpoint delete": lambda api, ws, g, u, e: api.delete(f"/v1/gateway/endpoints/{e[1].id}"),
    "group create": lambda api, ws, g, u, e: api.post(
        "/v1/gateway/groups", group_body("new", model("acme/llama")), format="json"
    ),
    "group update": lambda api, ws, g, u, e: api.patch(
        f"/v1/gateway/groups/{g['id']}", {"metadata": {"name": "x"}}, format="json"
    ),
    "group delete": lambda api, ws, g, u, e: api.delete(f"/v1/gateway/groups/{g['id']}"),
    "group key mint": lambda api, ws, g, u, e: api.post(
        f"/v1/gateway/groups/{g['id']}/api_keys", {}, format="json"
    ),
    "group key register": lambda api, ws, g, u, e: registration(api, ws, g),
    "user upsert (create)": lambda api, ws, g, u, e: api.post(
        "/v1/gateway/users", {"customer_id": "new", "models": [model("acme/llama")]}, format="json"
    ),
    "user upsert (update)": lambda api, ws, g, u, e: api.post(
        "/v1/gateway/users",
        {"customer_id": "user_1", "models": [model("acme/mistral")]},
        format="json",
    ),
    "user delete": lambda api, ws, g, u, e: api.delete(f"/v1/gateway/users/{u['id']}"),
    "user key mint": lambda api, ws, g, u, e: api.post(
        f"/v1/gateway/users/{u['id']}/api_keys", {}, format="json"
    ),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_mutation_is_audited_with_the_key_prefix(
    api: APIClient,
    manage_key: str,
    workspace: Workspace,
    group: dict,
    user: dict,
    endpoints: list,
    name: str,
) -> None:
    before = AuditEvent.objects.count()

    response = MUTATIONS[name](api, workspace, group, user, endpoints)

    assert response.status_code == 200, response.content
    new = AuditEvent.objects.order_by("created_at")[before:]
    assert new, name
    assert {event.actor for event in new} == {f"mgmt:{manage_key[:16]}"}
    assert all(event.workspace_id == workspace.id for event in new)


def test_key_revocations_are_audited(
    api: APIClient, manage_key: str, group: dict, user: dict
) -> None:
    for owner in (f"groups/{group['id']}", f"users/{user['id']}"):
        minted = api.post(f"/v1/gateway/{owner}/api_keys", {}, format="json").json()

        api.delete(f"/v1/gateway/{owner}/api_keys/{minted['prefix']}")

        event = AuditEvent.objects.filter(action="api_key.revoke").order_by("-created_at").first()
        assert event is not None
        assert event.actor == f"mgmt:{manage_key[:16]}"


def test_server_errors_under_v1_are_the_envelope() -> None:
    response = handler500(RequestFactory().get("/v1/gateway/groups"))

    assert response.status_code == 500
    assert json.loads(response.content)["error"]["code"] == "internal_error"
