"""Endpoints API: create, list, get, rename/replace targets, delete; validation codes."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from groups.models import AuditEvent, Workspace
from groups.services import secret_create, workspace_set_default_baseten_secret
from groups.services.audit import SYSTEM_ACTOR
from tests.api.conftest import TARGET, error_code

pytestmark = pytest.mark.django_db

BASETEN = {"provider": "BASETEN", "model_id": "abc123"}


def create(api: APIClient, **body: Any) -> Any:
    payload = {"slug": "acme/llama", "targets": [dict(TARGET)], **body}
    return api.post("/v1/gateway/endpoints", payload, format="json")


def test_create_returns_endpoint_v1(api: APIClient) -> None:
    response = create(api, region="EU")

    body = response.json()
    assert response.status_code == 200
    assert set(body) == {"id", "slug", "region", "routing", "targets", "created_at", "updated_at"}
    assert body["slug"] == "acme/llama"
    assert body["region"] == "EU"
    assert body["routing"] == {"strategy": "PRIORITY", "first_byte_timeout": None}
    assert body["targets"] == [{**TARGET, "secret_id": None, "weight": 1}]
    assert body["created_at"].endswith("Z")


def test_region_defaults_to_unrestricted(api: APIClient) -> None:
    assert create(api).json()["region"] == "UNRESTRICTED"


def test_get_and_list_show_the_endpoint(api: APIClient) -> None:
    created = create(api).json()

    fetched = api.get(f"/v1/gateway/endpoints/{created['id']}").json()
    listed = api.get("/v1/gateway/endpoints").json()

    assert fetched == created
    assert listed["items"] == [created]


def test_patch_replaces_targets(api: APIClient) -> None:
    created = create(api).json()
    targets = [dict(TARGET, target_model="b"), dict(TARGET, target_model="c")]

    response = api.patch(
        f"/v1/gateway/endpoints/{created['id']}", {"targets": targets}, format="json"
    )

    assert response.status_code == 200
    assert [t["target_model"] for t in response.json()["targets"]] == ["b", "c"]


def test_patch_renames_the_slug(api: APIClient) -> None:
    created = create(api).json()

    response = api.patch(
        f"/v1/gateway/endpoints/{created['id']}", {"slug": "acme/llama-2"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["slug"] == "acme/llama-2"


def test_delete_returns_a_tombstone_and_frees_the_slug(api: APIClient) -> None:
    created = create(api).json()

    deleted = api.delete(f"/v1/gateway/endpoints/{created['id']}")
    again = api.get(f"/v1/gateway/endpoints/{created['id']}")
    recreated = create(api)

    assert deleted.status_code == 200
    assert deleted.json() == {"id": created["id"], "slug": "acme/llama"}
    assert again.status_code == 404
    assert recreated.status_code == 200


def test_mutations_are_audited_with_the_key_prefix(api: APIClient, manage_key: str) -> None:
    created = create(api).json()
    api.patch(f"/v1/gateway/endpoints/{created['id']}", {"slug": "acme/x"}, format="json")
    api.delete(f"/v1/gateway/endpoints/{created['id']}")

    events = AuditEvent.objects.filter(object_id=created["id"]).order_by("created_at")

    assert [e.action for e in events] == ["endpoint.create", "endpoint.update", "endpoint.delete"]
    assert {e.actor for e in events} == {f"mgmt:{manage_key[:16]}"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"slug": "Acme/Llama"}, "invalid_slug"),
        ({"slug": "acme"}, "invalid_slug"),
        ({"slug": "acme/" + "a" * 101}, "invalid_slug"),
        ({"slug": "globex/llama"}, "slug_prefix_not_owned"),
        ({"targets": []}, "targets_required"),
        ({"targets": [dict(TARGET)] * 5}, "too_many_targets"),
        ({"targets": [{"provider": "NOPE"}]}, "invalid_target"),
        ({"targets": [{**BASETEN, "base_url": "https://x.example"}]}, "invalid_target"),
        ({"targets": [{"provider": "OPENAI_COMPATIBLE", "target_model": "m"}]}, "invalid_target"),
        ({"targets": [{**TARGET, "base_url": "http://example.com/v1"}]}, "unsafe_url"),
        (
            {"targets": [{"provider": "OPENAI", "target_model": "gpt", "secret_id": "sec_x"}]},
            "secret_not_found",
        ),
        ({"region": "MARS"}, "invalid_choice"),
        ({"extra": 1}, "unknown_field"),
        ({"slug": None}, "null"),
    ],
)
def test_create_validation_codes(
    api: APIClient, other_workspace: Workspace, body: dict, code: str
) -> None:
    response = create(api, **body)

    assert response.status_code == 400, response.content
    assert error_code(response) == code


def test_duplicate_slug_is_400(api: APIClient) -> None:
    create(api)

    response = create(api)

    assert response.status_code == 400
    assert error_code(response) == "slug_taken"


def test_missing_fields_are_400_required(api: APIClient) -> None:
    response = api.post("/v1/gateway/endpoints", {"slug": "acme/x"}, format="json")

    assert response.status_code == 400
    assert error_code(response) == "required"
    assert response.json()["error"]["param"] == "targets"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "empty_update"),
        ({"region": "EU"}, "immutable_field"),
        ({"slug": "x"}, "invalid_slug"),
        ({"targets": "no"}, "invalid_target"),
        ({"colour": 1}, "unknown_field"),
    ],
)
def test_patch_validation_codes(api: APIClient, body: dict, code: str) -> None:
    created = create(api).json()

    response = api.patch(f"/v1/gateway/endpoints/{created['id']}", body, format="json")

    assert response.status_code == 400, response.content
    assert error_code(response) == code


def test_a_baseten_target_without_secret_id_needs_the_workspace_default(
    api: APIClient, workspace: Workspace
) -> None:
    refused = create(api, targets=[dict(TARGET), dict(BASETEN)])
    patched = api.patch(
        f"/v1/gateway/endpoints/{create(api).json()['id']}",
        {"targets": [dict(BASETEN)]},
        format="json",
    )
    default = secret_create(workspace=workspace, name="bt", value="bt-1", actor=SYSTEM_ACTOR)
    workspace_set_default_baseten_secret(workspace=workspace, secret=default, actor=SYSTEM_ACTOR)
    accepted = create(api, slug="acme/bt", targets=[dict(BASETEN)])

    for response in (refused, patched):
        assert response.status_code == 400
        assert error_code(response) == "default_secret_missing"
        error = response.json()["error"]
        assert "default Baseten secret" in error["message"] and "admin" in error["message"]
    assert refused.json()["error"]["param"] == "targets[1].secret_id"
    assert accepted.status_code == 200, accepted.content
    assert accepted.json()["targets"][0]["secret_id"] is None
    assert "bt-1" not in accepted.content.decode()


def test_another_workspaces_default_secret_does_not_count(
    api: APIClient, other_workspace: Workspace
) -> None:
    theirs = secret_create(workspace=other_workspace, name="bt", value="x", actor=SYSTEM_ACTOR)
    workspace_set_default_baseten_secret(
        workspace=other_workspace, secret=theirs, actor=SYSTEM_ACTOR
    )

    refused = create(api, targets=[dict(BASETEN)])
    named = create(api, targets=[{**BASETEN, "secret_id": theirs.id}])

    assert error_code(refused) == "default_secret_missing"
    assert error_code(named) == "secret_not_found"


def test_routing_and_weights_are_stored_and_shown(api: APIClient) -> None:
    targets = [{**TARGET, "weight": 3}, {**TARGET, "target_model": "b"}]

    body = create(api, targets=targets, routing={"strategy": "WEIGHTED"}).json()

    assert body["routing"] == {"strategy": "WEIGHTED", "first_byte_timeout": None}
    assert [t["weight"] for t in body["targets"]] == [3, 1]


def test_patch_replaces_the_routing(api: APIClient) -> None:
    created = create(api, routing={"strategy": "WEIGHTED"}).json()

    response = api.patch(
        f"/v1/gateway/endpoints/{created['id']}",
        {"routing": {"first_byte_timeout": 12.5}},
        format="json",
    )

    assert response.status_code == 200
    assert response.json()["routing"] == {"strategy": "PRIORITY", "first_byte_timeout": 12.5}
    assert response.json()["targets"] == created["targets"]


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"targets": [{**TARGET, "weight": 0}]}, "invalid_target", "targets[0].weight"),
        ({"targets": [{**TARGET, "weight": 1001}]}, "invalid_target", "targets[0].weight"),
        ({"targets": [{**TARGET, "weight": "3"}]}, "invalid_target", "targets[0].weight"),
        ({"targets": [{**TARGET, "weight": True}]}, "invalid_target", "targets[0].weight"),
        ({"targets": [{**TARGET, "weight": 2.5}]}, "invalid_target", "targets[0].weight"),
        ({"routing": "WEIGHTED"}, "invalid_routing", "routing"),
        ({"routing": {"strategy": "ROUND_ROBIN"}}, "invalid_routing", "routing.strategy"),
        ({"routing": {"strategy": None}}, "invalid_routing", "routing.strategy"),
        ({"routing": {"sticky": True}}, "invalid_routing", "routing.sticky"),
        ({"routing": {"first_byte_timeout": 0}}, "invalid_routing", "routing.first_byte_timeout"),
        ({"routing": {"first_byte_timeout": 601}}, "invalid_routing", "routing.first_byte_timeout"),
        ({"routing": {"first_byte_timeout": "9"}}, "invalid_routing", "routing.first_byte_timeout"),
    ],
)
def test_routing_and_weight_validation(api: APIClient, body: dict, code: str, param: str) -> None:
    response = create(api, **body)

    assert response.status_code == 400, response.content
    assert error_code(response) == code
    assert response.json()["error"]["param"] == param
