"""Legacy federated users: upsert by customer_id, keys with a slug subset, soft delete."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from groups.models import AuditEvent
from keys import selectors as key_selectors
from tests.api.conftest import error_code, group_body, model

pytestmark = pytest.mark.django_db

USERS = "/v1/gateway/users"


def test_create_returns_the_user_shape(user: dict) -> None:
    assert set(user) == {"id", "customer_id", "models", "created_at"}
    assert user["customer_id"] == "user_1"
    assert [m["slug"] for m in user["models"]] == ["acme/llama", "acme/mistral"]


def test_upsert_by_customer_id_updates_the_models(api: APIClient, user: dict) -> None:
    response = api.post(
        USERS, {"customer_id": "user_1", "models": [model("acme/mistral", rpm=5)]}, format="json"
    )

    body = response.json()
    assert response.status_code == 200
    assert body["id"] == user["id"]
    assert body["models"] == [model("acme/mistral", rpm=5)]
    assert api.get(USERS).json()["items"] == [body]


def test_get_list_and_groups_are_separate(api: APIClient, user: dict, group: dict) -> None:
    fetched = api.get(f"{USERS}/{user['id']}").json()
    listed = [u["id"] for u in api.get(USERS).json()["items"]]

    assert fetched == user
    assert listed == [user["id"]]
    assert api.get(f"{USERS}/{group['id']}").status_code == 404


def test_key_restricted_to_a_subset(api: APIClient, user: dict) -> None:
    response = api.post(
        f"{USERS}/{user['id']}/api_keys", {"name": "k", "models": ["acme/llama"]}, format="json"
    )

    body = response.json()
    assert response.status_code == 200, body
    assert set(body) == {"api_key", "prefix", "name", "models"}
    assert [m["slug"] for m in body["models"]] == ["acme/llama"]
    key = key_selectors.api_key_resolve(plaintext=body["api_key"])
    assert key is not None and key.slugs == ["acme/llama"]


def test_key_without_subset_may_call_every_model(api: APIClient, user: dict) -> None:
    body = api.post(f"{USERS}/{user['id']}/api_keys", {}, format="json").json()

    assert [m["slug"] for m in body["models"]] == ["acme/llama", "acme/mistral"]


def test_user_keys_list_get_revoke(api: APIClient, user: dict) -> None:
    minted = api.post(f"{USERS}/{user['id']}/api_keys", {"name": "a"}, format="json").json()
    path = f"{USERS}/{user['id']}/api_keys/{minted['prefix']}"

    listed = api.get(f"{USERS}/{user['id']}/api_keys").json()["items"]
    fetched = api.get(path).json()
    revoked = api.delete(path)

    assert listed == [{"prefix": minted["prefix"], "name": "a"}]
    assert fetched == {"prefix": minted["prefix"], "name": "a"}
    assert revoked.json() == {"prefix": minted["prefix"]}
    assert api.delete(path).status_code == 404


def test_soft_delete_stops_the_keys(api: APIClient, user: dict, manage_key: str) -> None:
    minted = api.post(f"{USERS}/{user['id']}/api_keys", {}, format="json").json()

    deleted = api.delete(f"{USERS}/{user['id']}")

    assert deleted.status_code == 200
    assert set(deleted.json()) == {"id", "customer_id", "deleted_at"}
    assert api.get(f"{USERS}/{user['id']}").status_code == 404
    assert api.delete(f"{USERS}/{user['id']}").status_code == 404
    assert key_selectors.api_key_resolve(plaintext=minted["api_key"]) is None
    assert AuditEvent.objects.filter(
        object_id=user["id"], action="group.delete", actor=f"mgmt:{manage_key[:16]}"
    ).exists()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"customer_id": "", "models": []}, "blank"),
        ({"customer_id": "c" * 256, "models": []}, "max_length"),
        ({"customer_id": 7, "models": []}, "invalid_type"),
        ({"models": []}, "required"),
        ({"customer_id": "c"}, "required"),
        ({"customer_id": "c", "models": [model("acme/nope")]}, "unknown_slug"),
        (
            {"customer_id": "c", "models": [model("acme/llama"), model("acme/llama")]},
            "duplicate_slug",
        ),
        ({"customer_id": "c", "models": [], "plan": "gold"}, "unknown_field"),
    ],
)
def test_upsert_validation_codes(api: APIClient, endpoints: list, body: dict, code: str) -> None:
    response = api.post(USERS, body, format="json")

    assert response.status_code == 400, response.content
    assert error_code(response) == code


def test_customer_id_of_a_group_is_taken(api: APIClient, group: dict) -> None:
    response = api.post(
        USERS, {"customer_id": "cust_1", "models": [model("acme/llama")]}, format="json"
    )

    assert response.status_code == 400
    assert error_code(response) == "external_id_taken"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"models": ["acme/other"]}, "slugs_not_allowed"),
        ({"models": "acme/llama"}, "not_a_list"),
        ({"models": [1]}, "invalid_type"),
        ({"scope": "x"}, "unknown_field"),
    ],
)
def test_user_key_validation_codes(api: APIClient, user: dict, body: dict, code: str) -> None:
    response = api.post(f"{USERS}/{user['id']}/api_keys", body, format="json")

    assert response.status_code == 400, response.content
    assert error_code(response) == code


def test_group_ids_are_not_users(api: APIClient, group: dict) -> None:
    response = api.post(f"{USERS}/{group['id']}/api_keys", {}, format="json")

    assert response.status_code == 404


def test_groups_cannot_be_created_with_a_users_external_id(api: APIClient, user: dict) -> None:
    response = api.post(
        "/v1/gateway/groups", group_body("user_1", model("acme/llama")), format="json"
    )

    assert response.status_code == 400
    assert error_code(response) == "external_id_taken"


def test_a_slug_that_is_not_an_endpoint_yet_names_the_next_step(api: APIClient) -> None:
    body = {"customer_id": "seed_user", "models": [model("acme/llama")]}

    refused = api.post(USERS, body, format="json")
    created = api.post(
        "/v1/gateway/endpoints",
        {
            "slug": "acme/llama",
            "targets": [
                {
                    "provider": "OPENAI_COMPATIBLE",
                    "base_url": "http://127.0.0.1:9/v1",
                    "target_model": "llama-3-70b",
                }
            ],
        },
        format="json",
    )
    retried = api.post(USERS, body, format="json")

    assert refused.status_code == 400
    assert error_code(refused) == "unknown_slug"
    error = refused.json()["error"]
    assert "POST /v1/gateway/endpoints" in error["message"] and "admin" in error["message"]
    assert error["param"] == "models[0].slug"
    assert created.status_code == 200, created.content
    assert retried.status_code == 200, retried.content
