"""Every management route: 401, 403 (not onboarded, federated, VIEW writing), 404 tenant, 405."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from groups import services as group_services
from groups.models import Workspace
from groups.services.audit import SYSTEM_ACTOR
from keys import services as key_services
from tests.api.conftest import client_for, endpoint_make, error_code, management_key, model

pytestmark = pytest.mark.django_db

# (method, path template) of every management route
ROUTES = [
    ("get", "/v1/gateway/endpoints"),
    ("post", "/v1/gateway/endpoints"),
    ("get", "/v1/gateway/endpoints/{endpoint}"),
    ("patch", "/v1/gateway/endpoints/{endpoint}"),
    ("delete", "/v1/gateway/endpoints/{endpoint}"),
    ("get", "/v1/gateway/groups"),
    ("post", "/v1/gateway/groups"),
    ("get", "/v1/gateway/groups/{group}"),
    ("patch", "/v1/gateway/groups/{group}"),
    ("delete", "/v1/gateway/groups/{group}"),
    ("get", "/v1/gateway/groups/{group}/usage"),
    ("get", "/v1/gateway/groups/{group}/api_keys"),
    ("post", "/v1/gateway/groups/{group}/api_keys"),
    ("post", "/v1/gateway/groups/{group}/api_keys/register"),
    ("get", "/v1/gateway/groups/{group}/api_keys/{group_key}"),
    ("delete", "/v1/gateway/groups/{group}/api_keys/{group_key}"),
    ("get", "/v1/gateway/users"),
    ("post", "/v1/gateway/users"),
    ("get", "/v1/gateway/users/{user}"),
    ("delete", "/v1/gateway/users/{user}"),
    ("get", "/v1/gateway/users/{user}/api_keys"),
    ("post", "/v1/gateway/users/{user}/api_keys"),
    ("get", "/v1/gateway/users/{user}/api_keys/{user_key}"),
    ("delete", "/v1/gateway/users/{user}/api_keys/{user_key}"),
]
SCOPED = [(m, p) for m, p in ROUTES if "{" in p]
WRITES = [(m, p) for m, p in ROUTES if m != "get"]
ALLOWED: dict[str, set[str]] = {}
for _method, _path in ROUTES:
    ALLOWED.setdefault(_path, set()).add(_method)


def world_make(workspace: Workspace, prefix: str) -> dict[str, str]:
    """One object of every kind in `workspace`, by path placeholder."""
    endpoint = endpoint_make(workspace, f"{prefix}/llama")
    group = group_services.group_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        external_entity_id="g",
        models=[model(endpoint.slug)],
    )
    user, _ = group_services.user_upsert(
        workspace=workspace, customer_id="u", models=[model(endpoint.slug)], actor=SYSTEM_ACTOR
    )
    group_key, _ = key_services.api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)
    user_key, _ = key_services.api_key_create(workspace=workspace, group=user, actor=SYSTEM_ACTOR)
    return {
        "endpoint": endpoint.id,
        "group": group.id,
        "user": user.id,
        "group_key": group_key.prefix,
        "user_key": user_key.prefix,
    }


@pytest.fixture
def world(workspace: Workspace) -> dict[str, str]:
    return world_make(workspace, "acme")


@pytest.fixture
def other_world(other_workspace: Workspace) -> dict[str, str]:
    return world_make(other_workspace, "globex")


def call(client: APIClient, method: str, path: str, world: dict[str, str]) -> Any:
    kwargs: dict[str, Any] = {"format": "json"} if method in ("post", "patch") else {}
    if method in ("post", "patch"):
        kwargs["data"] = {}
    return getattr(client, method)(path.format(**world), **kwargs)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_missing_key_is_401(world: dict[str, str], method: str, path: str) -> None:
    response = call(APIClient(), method, path, world)

    assert response.status_code == 401
    assert error_code(response) == "missing_api_key"


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_unknown_key_is_401(world: dict[str, str], method: str, path: str) -> None:
    client = client_for("gwm_000000000000.unknownunknownunknownunknownunknown00")

    response = call(client, method, path, world)

    assert response.status_code == 401
    assert error_code(response) == "invalid_api_key"


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_revoked_key_is_401(
    workspace: Workspace, world: dict[str, str], method: str, path: str
) -> None:
    plaintext = management_key(workspace)
    key_services.management_key_revoke(
        workspace=workspace, prefix=plaintext[:16], actor=SYSTEM_ACTOR
    )

    response = call(client_for(plaintext), method, path, world)

    assert response.status_code == 401
    assert error_code(response) == "invalid_api_key"


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_not_onboarded_workspace_is_403(
    workspace: Workspace, world: dict[str, str], method: str, path: str
) -> None:
    plaintext = management_key(workspace)
    group_services.workspace_set_onboarded(workspace=workspace, onboarded=False, actor=SYSTEM_ACTOR)

    response = call(client_for(plaintext), method, path, world)

    assert response.status_code == 403
    assert error_code(response) == "workspace_not_onboarded"


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_federated_key_is_403(
    workspace: Workspace, world: dict[str, str], method: str, path: str
) -> None:
    group = group_services.group_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        external_entity_id="fed",
        models=[model("acme/llama")],
    )
    _key, plaintext = key_services.api_key_create(
        workspace=workspace, group=group, actor=SYSTEM_ACTOR
    )

    response = call(client_for(plaintext), method, path, world)

    assert response.status_code == 403
    assert error_code(response) == "federated_key_not_allowed"


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_view_scope_cannot_write(
    viewer: APIClient, world: dict[str, str], method: str, path: str
) -> None:
    response = call(viewer, method, path, world)

    assert response.status_code == 403
    assert error_code(response) == "insufficient_scope"


@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if r[0] == "get"])
def test_view_scope_can_read(
    viewer: APIClient, world: dict[str, str], method: str, path: str
) -> None:
    response = call(viewer, method, path, world)

    assert response.status_code == 200, response.content


@pytest.mark.parametrize(("method", "path"), SCOPED)
def test_another_workspaces_object_is_404(
    api: APIClient, world: dict[str, str], other_world: dict[str, str], method: str, path: str
) -> None:
    response = call(api, method, path, other_world)

    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("path", sorted(ALLOWED))
def test_wrong_method_is_405(api: APIClient, world: dict[str, str], path: str) -> None:
    wrong = next(m for m in ("put", "patch", "post", "delete") if m not in ALLOWED[path])

    response = call(api, wrong, path, world)

    assert response.status_code == 405
    assert error_code(response) == "method_not_allowed"


@pytest.mark.parametrize(
    "accept", [None, "*/*", "application/json", "application/*", "text/html, */*;q=0.1"]
)
def test_it_answers_json_to_what_accepts_json(api: APIClient, accept: str | None) -> None:
    path = "/v1/gateway/groups"

    response = api.get(path) if accept is None else api.get(path, HTTP_ACCEPT=accept)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("accept", "query", "status", "code"),
    [
        ("text/html", "", 406, "not_acceptable"),
        ("", "", 406, "not_acceptable"),
        ("*/*", "?format=html", 404, "not_found"),
    ],
)
def test_it_refuses_what_does_not_accept_json(
    api: APIClient, accept: str, query: str, status: int, code: str
) -> None:
    response = api.get(f"/v1/gateway/groups{query}", HTTP_ACCEPT=accept)

    assert response.status_code == status
    assert error_code(response) == code
