"""The README's quick-start flows, through plain HTTP with a management key."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from groups.models import AuditEvent

pytestmark = pytest.mark.django_db


def ok(response: object) -> dict:
    assert response.status_code == 200, response.content  # type: ignore[attr-defined]
    return response.json()  # type: ignore[attr-defined]


def test_endpoint_root_child_key_fetch_revoke(api: APIClient, manage_key: str) -> None:
    target = {
        "provider": "OPENAI_COMPATIBLE",
        "base_url": "http://127.0.0.1:9/v1",
        "target_model": "m",
    }
    limits = {
        "rate_limits": [{"type": "REQUEST", "unit": "MINUTE", "threshold": 60}],
        "usage_limits": [{"type": "TOKEN", "unit": "DAY", "threshold": 100000}],
    }

    endpoint = ok(
        api.post(
            "/v1/gateway/endpoints", {"slug": "acme/llama", "targets": [target]}, format="json"
        )
    )
    root = ok(
        api.post(
            "/v1/gateway/groups",
            {
                "metadata": {"name": "Acme prod", "external_entity_id": "cust_42"},
                "models": [{"slug": "acme/llama", **limits}],
                "hierarchy": {"limit_enforcement": "CASCADING", "parent_group_id": None},
            },
            format="json",
        )
    )
    child = ok(
        api.post(
            "/v1/gateway/groups",
            {
                "metadata": {"name": "Team A", "external_entity_id": "team_a"},
                "models": [
                    {
                        "slug": "acme/llama",
                        "rate_limits": [{"type": "REQUEST", "unit": "MINUTE", "threshold": 10}],
                    }
                ],
                "hierarchy": {"parent_group_id": root["id"]},
            },
            format="json",
        )
    )
    key = ok(
        api.post(f"/v1/gateway/groups/{child['id']}/api_keys", {"name": "team-a"}, format="json")
    )
    fetched = ok(api.get(f"/v1/gateway/groups/{child['id']}/api_keys/{key['prefix']}"))
    revoked = ok(api.delete(f"/v1/gateway/groups/{child['id']}/api_keys/{key['prefix']}"))

    assert endpoint["slug"] == "acme/llama"
    assert child["hierarchy"] == {"limit_enforcement": "CASCADING", "parent_group_id": root["id"]}
    assert fetched == {"prefix": key["prefix"], "name": "team-a"}
    assert revoked == {"prefix": key["prefix"]}
    assert AuditEvent.objects.filter(actor=f"mgmt:{manage_key[:16]}").count() >= 5


def test_user_create_upsert_subset_key_soft_delete(api: APIClient, endpoints: list) -> None:
    both = [{"slug": "acme/llama"}, {"slug": "acme/mistral"}]

    created = ok(
        api.post("/v1/gateway/users", {"customer_id": "c1", "models": both[:1]}, format="json")
    )
    upserted = ok(
        api.post("/v1/gateway/users", {"customer_id": "c1", "models": both}, format="json")
    )
    key = ok(
        api.post(
            f"/v1/gateway/users/{created['id']}/api_keys",
            {"models": ["acme/mistral"]},
            format="json",
        )
    )
    deleted = ok(api.delete(f"/v1/gateway/users/{created['id']}"))

    assert upserted["id"] == created["id"]
    assert [m["slug"] for m in upserted["models"]] == ["acme/llama", "acme/mistral"]
    assert [m["slug"] for m in key["models"]] == ["acme/mistral"]
    assert deleted["id"] == created["id"]
    assert api.get(f"/v1/gateway/users/{created['id']}").status_code == 404
