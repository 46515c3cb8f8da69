"""Fixtures of the management API suites: keys, authenticated clients, a small world of objects."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from groups.models import Group, Workspace
from groups.services.audit import SYSTEM_ACTOR
from keys import services as key_services
from routing import services as routing_services
from routing.models import Endpoint

TARGET = {
    "provider": "OPENAI_COMPATIBLE",
    "base_url": "http://127.0.0.1:9/v1",
    "target_model": "llama-3-70b",
}


def client_for(plaintext: str, *, scheme: str = "Bearer") -> APIClient:
    """An APIClient sending the key on every request."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {plaintext}")
    return client


def management_key(workspace: Workspace, *, scope: str = "MANAGE") -> str:
    """A fresh management key's plaintext."""
    _key, plaintext = key_services.management_key_create(
        workspace=workspace, actor=SYSTEM_ACTOR, scope=scope, name=f"test {scope}"
    )
    return plaintext


@pytest.fixture
def manage_key(workspace: Workspace) -> str:
    return management_key(workspace)


@pytest.fixture
def api(manage_key: str) -> APIClient:
    """A client holding a MANAGE key of `workspace`."""
    return client_for(manage_key)


@pytest.fixture
def viewer(workspace: Workspace) -> APIClient:
    """A client holding a VIEW key of `workspace`."""
    return client_for(management_key(workspace, scope="VIEW"))


@pytest.fixture
def other_api(other_workspace: Workspace) -> APIClient:
    """A client holding a MANAGE key of the other tenant."""
    return client_for(management_key(other_workspace))


def endpoint_make(workspace: Workspace, slug: str) -> Endpoint:
    return routing_services.endpoint_create(
        workspace=workspace, actor=SYSTEM_ACTOR, slug=slug, targets=[dict(TARGET)]
    )


@pytest.fixture
def endpoints(workspace: Workspace) -> list[Endpoint]:
    """Two live endpoints of `workspace`: acme/llama and acme/mistral."""
    return [endpoint_make(workspace, "acme/llama"), endpoint_make(workspace, "acme/mistral")]


def model(slug: str, *, rpm: int | None = None, tpd: int | None = None) -> dict[str, Any]:
    """A models entry in the wire shape."""
    rate = [{"type": "REQUEST", "unit": "MINUTE", "threshold": rpm}] if rpm is not None else []
    usage = [{"type": "TOKEN", "unit": "DAY", "threshold": tpd}] if tpd is not None else []
    return {"slug": slug, "rate_limits": rate, "usage_limits": usage}


def group_body(ext_id: str, *models: dict[str, Any], **hierarchy: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": f"Group {ext_id}", "external_entity_id": ext_id},
        "models": list(models),
    }
    if hierarchy:
        body["hierarchy"] = hierarchy
    return body


@pytest.fixture
def group(api: APIClient, endpoints: list[Endpoint]) -> dict[str, Any]:
    """A root group (through the API) with access to acme/llama."""
    response = api.post(
        "/v1/gateway/groups",
        group_body("cust_1", model("acme/llama", rpm=100, tpd=10_000)),
        format="json",
    )
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def user(api: APIClient, endpoints: list[Endpoint]) -> dict[str, Any]:
    """A legacy user with both endpoints."""
    body = {"customer_id": "user_1", "models": [model("acme/llama"), model("acme/mistral")]}
    response = api.post("/v1/gateway/users", body, format="json")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def other_group(other_workspace: Workspace) -> Group:
    """A group of the other tenant (its id must be a 404 for `workspace`)."""
    return root_group_make(other_workspace, "globex/llama", external_id="globex_1")


def root_group_make(workspace: Workspace, slug: str, *, external_id: str) -> Group:
    """A root group of `workspace` allowed `slug` (its endpoint made first)."""
    from groups import services as group_services

    endpoint_make(workspace, slug)
    return group_services.group_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        external_entity_id=external_id,
        models=[model(slug)],
    )


def error_code(response: Any) -> str:
    """The `code` of an error envelope (asserting the envelope's shape on the way)."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "code", "param"}, body
    return str(body["error"]["code"])
