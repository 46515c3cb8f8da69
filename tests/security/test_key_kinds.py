"""Each key kind only opens its own door: management keys cannot call inference (401), federated
keys cannot manage (403), on every route of each side."""

from __future__ import annotations

import httpx
import pytest
from rest_framework.test import APIClient

from groups.models import Workspace
from keys.hashing import FEDERATED_PREFIX
from tests.proxy.conftest import SLUG, GatewayThread, Tenant
from tests.security.conftest import World
from tests.security.routes import ROUTES, Route
from tests.security.test_tenant_isolation import path_values, send

INFERENCE = [
    (
        "POST",
        "/v1/chat/completions",
        {"model": SLUG, "messages": [{"role": "user", "content": "x"}]},
    ),
    ("POST", "/v1/completions", {"model": SLUG, "prompt": "x"}),
    ("POST", "/v1/embeddings", {"model": SLUG, "input": "x"}),
    ("GET", "/v1/models", None),
]


@pytest.mark.parametrize(("method", "path", "body"), INFERENCE, ids=lambda v: str(v)[:24])
@pytest.mark.parametrize("scheme", ["Bearer", "Api-Key"])
def test_a_management_key_cannot_call_inference(
    gateway: GatewayThread,  # noqa: F811
    tenant: Tenant,  # noqa: F811
    workspace: Workspace,
    method: str,
    path: str,
    body: dict[str, object] | None,
    scheme: str,
) -> None:
    from groups.services.audit import SYSTEM_ACTOR
    from keys.services import management_key_create

    _key, plaintext = management_key_create(workspace=workspace, actor=SYSTEM_ACTOR)

    response = httpx.request(
        method, gateway.url + path, json=body, headers={"Authorization": f"{scheme} {plaintext}"}
    )
    control = httpx.request(
        method, gateway.url + path, json=body, headers={"Authorization": f"Bearer {tenant.key}"}
    )

    assert response.status_code == 401, response.content
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert control.status_code == 200, control.content


@pytest.mark.django_db
@pytest.mark.parametrize("route", ROUTES, ids=str)
@pytest.mark.parametrize("which", ["group_key", "user_key"])
def test_a_federated_key_cannot_manage(route: Route, world_a: World, which: str) -> None:
    plaintext = next(p for p in world_a.secrets if p.startswith(world_a.ids[which]))
    assert plaintext.startswith(FEDERATED_PREFIX)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")

    response = send(client, route, route.path(path_values(route, world_a)), world_a)

    assert response.status_code == 403, response.content
    assert response.json()["error"]["code"] == "federated_key_not_allowed"
