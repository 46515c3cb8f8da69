"""Management-key authentication, scopes and the envelope for every failure."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from groups.models import Workspace
from groups.services.audit import SYSTEM_ACTOR
from keys import services as key_services
from keys.authentication import VERIFIED_TTL_S
from keys.models import ManagementKey
from tests.api.conftest import client_for, error_code, management_key

pytestmark = pytest.mark.django_db


def test_bearer_and_api_key_schemes_are_accepted(manage_key: str) -> None:
    for scheme in ("Bearer", "Api-Key", "bearer"):
        response = client_for(manage_key, scheme=scheme).get("/v1/gateway/groups")

        assert response.status_code == 200, scheme


def test_missing_key_is_401_missing_api_key(workspace: Workspace) -> None:
    response = APIClient().get("/v1/gateway/groups")

    assert response.status_code == 401
    assert error_code(response) == "missing_api_key"
    assert response.json()["error"]["type"] == "authentication_error"


def test_unknown_key_is_401_invalid_api_key(workspace: Workspace) -> None:
    response = client_for("gwm_abcdefghijkl.notarealsecretatallnotarealsecret").get(
        "/v1/gateway/groups"
    )

    assert response.status_code == 401
    assert error_code(response) == "invalid_api_key"


def test_unknown_scheme_is_401(manage_key: str) -> None:
    response = client_for(manage_key, scheme="Basic").get("/v1/gateway/groups")

    assert response.status_code == 401
    assert error_code(response) == "invalid_api_key"


def test_revoked_key_is_401(workspace: Workspace, manage_key: str) -> None:
    key_services.management_key_revoke(
        workspace=workspace, prefix=manage_key[:16], actor=SYSTEM_ACTOR
    )

    response = client_for(manage_key).get("/v1/gateway/groups")

    assert response.status_code == 401
    assert error_code(response) == "invalid_api_key"


def test_a_key_revoked_while_in_use_is_401_at_once(workspace: Workspace, manage_key: str) -> None:
    client = client_for(manage_key)
    assert client.get("/v1/gateway/groups").status_code == 200

    key_services.management_key_revoke(
        workspace=workspace, prefix=manage_key[:16], actor=SYSTEM_ACTOR
    )

    assert error_code(client.get("/v1/gateway/groups")) == "invalid_api_key"


def test_a_worker_rereads_a_verified_key_within_its_ttl(
    workspace: Workspace, manage_key: str, django_assert_num_queries: Any
) -> None:
    """Another process's revocation or off-boarding reaches this worker within VERIFIED_TTL_S
    (no signal reaches it: the rows change behind its back)."""
    client = client_for(manage_key)
    assert client.get("/v1/gateway/groups").status_code == 200
    with django_assert_num_queries(1):  # the page only: the key was verified just now
        assert client.get("/v1/gateway/groups").status_code == 200

    Workspace.objects.filter(pk=workspace.pk).update(onboarded=False)
    time.sleep(VERIFIED_TTL_S)
    assert error_code(client.get("/v1/gateway/groups")) == "workspace_not_onboarded"

    Workspace.objects.filter(pk=workspace.pk).update(onboarded=True)
    assert client.get("/v1/gateway/groups").status_code == 200
    ManagementKey.objects.filter(prefix=manage_key[:16]).update(revoked_at=timezone.now())
    time.sleep(VERIFIED_TTL_S)
    assert error_code(client.get("/v1/gateway/groups")) == "invalid_api_key"


def test_workspace_not_onboarded_is_403(workspace: Workspace, manage_key: str) -> None:
    Workspace.objects.filter(pk=workspace.pk).update(onboarded=False)

    response = client_for(manage_key).get("/v1/gateway/groups")

    assert response.status_code == 403
    assert error_code(response) == "workspace_not_onboarded"


def test_federated_key_is_403(api: APIClient, group: dict) -> None:
    minted = api.post(f"/v1/gateway/groups/{group['id']}/api_keys", {}, format="json").json()

    response = client_for(minted["api_key"]).get("/v1/gateway/groups")

    assert response.status_code == 403
    assert error_code(response) == "federated_key_not_allowed"


def test_revoked_federated_key_is_still_403(api: APIClient, group: dict) -> None:
    minted = api.post(f"/v1/gateway/groups/{group['id']}/api_keys", {}, format="json").json()
    api.delete(f"/v1/gateway/groups/{group['id']}/api_keys/{minted['prefix']}")

    response = client_for(minted["api_key"]).get("/v1/gateway/groups")

    assert response.status_code == 403
    assert error_code(response) == "federated_key_not_allowed"


def test_view_scope_reads_but_cannot_write(viewer: APIClient, endpoints: list) -> None:
    read = viewer.get("/v1/gateway/groups")
    write = viewer.post("/v1/gateway/groups", {}, format="json")

    assert read.status_code == 200
    assert write.status_code == 403
    assert error_code(write) == "insufficient_scope"


def test_last_used_at_is_written_at_most_once_a_minute(
    workspace: Workspace, manage_key: str
) -> None:
    client = client_for(manage_key)
    client.get("/v1/gateway/groups")
    first = ManagementKey.objects.get(prefix=manage_key[:16]).last_used_at

    client.get("/v1/gateway/groups")
    second = ManagementKey.objects.get(prefix=manage_key[:16]).last_used_at
    ManagementKey.objects.filter(prefix=manage_key[:16]).update(
        last_used_at=timezone.now() - timedelta(minutes=2)
    )
    time.sleep(VERIFIED_TTL_S)  # the worker reads the key again, with its last use
    client.get("/v1/gateway/groups")
    third = ManagementKey.objects.get(prefix=manage_key[:16]).last_used_at

    assert first is not None
    assert second == first
    assert third is not None and third > first


def test_a_key_only_sees_its_own_workspace(
    api: APIClient, other_api: APIClient, group: dict
) -> None:
    response = other_api.get("/v1/gateway/groups")

    assert response.status_code == 200
    assert response.json()["items"] == []


def test_unknown_gateway_path_is_envelope_404(api: APIClient) -> None:
    for path in ("/v1/gateway/nope", "/v1/gateway/groups/x/y/z/w", "/v1/gateway"):
        response = api.get(path)

        assert response.status_code == 404, path
        assert error_code(response) == "not_found"


def test_unknown_v1_path_is_envelope_404_from_handler404(workspace: Workspace) -> None:
    from django.test import Client

    response = Client().get("/v1/not-a-route-anywhere")

    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_wrong_method_is_envelope_405(api: APIClient) -> None:
    response = api.put("/v1/gateway/groups", {}, format="json")

    assert response.status_code == 405
    assert error_code(response) == "method_not_allowed"


def test_non_json_body_is_415(api: APIClient) -> None:
    response = api.post(
        "/v1/gateway/groups", "a=b", content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 415
    assert error_code(response) == "unsupported_media_type"


def test_malformed_json_is_400(api: APIClient) -> None:
    response = api.post("/v1/gateway/groups", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert error_code(response) == "invalid_json"


def test_body_must_be_an_object(api: APIClient) -> None:
    response = api.post("/v1/gateway/groups", "[1, 2]", content_type="application/json")

    assert response.status_code == 400
    assert error_code(response) == "invalid_body"


def test_too_large_body_is_413(api: APIClient, settings: object) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100  # type: ignore[attr-defined]

    response = api.post("/v1/gateway/groups", {"x": "y" * 200}, format="json")

    assert response.status_code == 413
    assert error_code(response) == "request_too_large"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"surprise": 1}, "surprise"),
        (
            {"metadata": {"external_entity_id": "a", "colour": "red"}, "models": []},
            "metadata.colour",
        ),
        (
            {"metadata": {"external_entity_id": "a"}, "models": [], "hierarchy": {"x": 1}},
            "hierarchy.x",
        ),
    ],
)
def test_unknown_fields_are_rejected_at_every_level(api: APIClient, body: dict, param: str) -> None:
    response = api.post("/v1/gateway/groups", body, format="json")

    assert response.status_code == 400
    assert error_code(response) == "unknown_field"
    assert response.json()["error"]["param"] == param


def test_unknown_field_inside_a_model_is_rejected(api: APIClient, endpoints: list) -> None:
    body = {
        "metadata": {"external_entity_id": "a"},
        "models": [
            {
                "slug": "acme/llama",
                "rate_limits": [{"type": "TOKEN", "unit": "MINUTE", "threshold": 1, "burst": 2}],
            }
        ],
    }

    response = api.post("/v1/gateway/groups", body, format="json")

    assert response.status_code == 400
    assert error_code(response) == "unknown_field"
    assert response.json()["error"]["param"] == "models[0].rate_limits[0].burst"


def test_management_key_of_another_workspace_is_not_special(
    other_workspace: Workspace, group: dict
) -> None:
    client = client_for(management_key(other_workspace))

    response = client.get(f"/v1/gateway/groups/{group['id']}")

    assert response.status_code == 404


def test_post_to_an_unknown_gateway_path_is_envelope_404_not_a_csrf_page(
    workspace: Workspace,
) -> None:
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post(
        "/v1/gateway/nowhere", "{}", content_type="application/json"
    )

    assert response.status_code == 404
    assert error_code(response) == "not_found"
