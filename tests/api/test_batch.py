"""Batch creates: many groups or keys in one call, all or nothing, errors naming their item."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from groups.models import AuditEvent, Group
from keys.hashing import key_hash
from keys.models import ApiKey
from tests.api.conftest import error_code, group_body, model

pytestmark = pytest.mark.django_db

GROUPS_BATCH = "/v1/gateway/groups:batch"
KEYS_BATCH = "/v1/gateway/api_keys:batch"
PAST = "2001-01-01T00:00:00Z"


def bodies(count: int, prefix: str = "c") -> list[dict[str, Any]]:
    return [group_body(f"{prefix}{i}", model("acme/llama", rpm=10, tpd=100)) for i in range(count)]


def test_a_batch_creates_every_group_as_single_creates_would(
    api: APIClient, endpoints: list, manage_key: str
) -> None:
    single_body = group_body("single", model("acme/llama", rpm=10, tpd=100))
    one = api.post("/v1/gateway/groups", single_body, format="json")

    response = api.post(GROUPS_BATCH, {"groups": bodies(3)}, format="json")

    items = response.json()["items"]
    assert response.status_code == 200, items
    assert [item["metadata"]["external_entity_id"] for item in items] == ["c0", "c1", "c2"]
    for item in items:
        fetched = api.get(f"/v1/gateway/groups/{item['id']}").json()
        assert item == fetched
        assert set(item) == set(one.json())
    audits = AuditEvent.objects.filter(
        action="group.create", object_id__in=[i["id"] for i in items]
    )
    single = AuditEvent.objects.get(action="group.create", object_id=one.json()["id"])
    assert audits.count() == 3
    assert {audit.actor for audit in audits} == {single.actor}
    first = audits.get(object_id=items[0]["id"]).after
    assert first is not None and single.after is not None
    assert set(first) == set(single.after)
    assert first["models"] == single.after["models"]


def test_a_batch_of_children_gets_effective_limits_of_its_chain(
    api: APIClient, endpoints: list
) -> None:
    root = api.post(
        "/v1/gateway/groups",
        group_body("root", model("acme/llama", rpm=100, tpd=50), limit_enforcement="CASCADING"),
        format="json",
    ).json()
    children = [
        group_body(f"kid{i}", model("acme/llama", rpm=5), parent_group_id=root["id"])
        for i in range(2)
    ]

    items = api.post(GROUPS_BATCH, {"groups": children}, format="json").json()["items"]

    for item in items:
        assert item["hierarchy"] == {
            "limit_enforcement": "CASCADING",
            "parent_group_id": root["id"],
        }
        assert item == api.get(f"/v1/gateway/groups/{item['id']}").json()
    usage = items[0]["effective_models"][0]["usage_limits"][0]
    assert usage["source_group"] == root["id"]


def test_one_bad_item_creates_nothing_and_names_the_item(api: APIClient, endpoints: list) -> None:
    groups = bodies(4)
    groups[2]["models"][0]["slug"] = "acme/unknown"

    response = api.post(GROUPS_BATCH, {"groups": groups}, format="json")

    assert response.status_code == 400
    assert error_code(response) == "unknown_slug"
    assert response.json()["error"]["param"] == "groups[2].models[0].slug"
    assert response.json()["error"]["message"].startswith("groups[2]: ")
    assert not Group.objects.filter(external_entity_id__startswith="c").exists()


def _unknown_field(g: list[Any]) -> None:
    g[1]["metadata"]["colour"] = "red"


def _no_external_id(g: list[Any]) -> None:
    del g[1]["metadata"]["external_entity_id"]


def _no_models(g: list[Any]) -> None:
    g[1]["models"] = []


def _negative_threshold(g: list[Any]) -> None:
    g[1]["models"][0]["rate_limits"][0]["threshold"] = -1


def _missing_parent(g: list[Any]) -> None:
    g[1]["hierarchy"] = {"parent_group_id": "grp_nope"}


def _external_id_twice(g: list[Any]) -> None:
    g[1]["metadata"]["external_entity_id"] = "c0"


def _not_an_object(g: list[Any]) -> None:
    g[1] = "not an object"


EXTERNAL_ID = "groups[1].metadata.external_entity_id"


@pytest.mark.parametrize(
    ("change", "code", "param"),
    [
        (_unknown_field, "unknown_field", "groups[1].metadata.colour"),
        (_no_external_id, "required", EXTERNAL_ID),
        (_no_models, "models_required", "groups[1].models"),
        (_negative_threshold, "invalid_threshold", "groups[1].models[0].rate_limits[0].threshold"),
        (_missing_parent, "parent_not_found", "groups[1].hierarchy.parent_group_id"),
        (_external_id_twice, "duplicate_external_id", EXTERNAL_ID),
        (_not_an_object, "invalid", "groups[1]"),
    ],
)
def test_item_validation_codes(
    api: APIClient, endpoints: list, change: Any, code: str, param: str
) -> None:
    groups = bodies(3)
    change(groups)

    response = api.post(GROUPS_BATCH, {"groups": groups}, format="json")

    assert response.status_code == 400, response.content
    assert error_code(response) == code
    assert response.json()["error"]["param"] == param
    assert Group.objects.count() == 0


def test_an_external_id_already_taken_fails_the_batch_like_a_single_create(
    api: APIClient, endpoints: list
) -> None:
    first = api.post(GROUPS_BATCH, {"groups": bodies(2)}, format="json")

    again = api.post(GROUPS_BATCH, {"groups": bodies(3)}, format="json")

    assert first.status_code == 200
    assert again.status_code == 400
    assert error_code(again) == "external_id_taken"
    assert again.json()["error"]["param"] == "groups[0].metadata.external_entity_id"
    assert Group.objects.count() == 2


@pytest.mark.parametrize("body", [{}, {"groups": []}, {"groups": {}}, {"groups": [{}], "x": 1}])
def test_a_batch_body_must_be_a_list_of_groups(api: APIClient, body: dict) -> None:
    response = api.post(GROUPS_BATCH, body, format="json")

    assert response.status_code == 400
    assert error_code(response) in {"invalid_batch", "unknown_field"}


def test_more_than_a_thousand_items_is_refused_before_any_is_looked_at(
    api: APIClient, endpoints: list
) -> None:
    groups = [{"metadata": {"external_entity_id": str(i)}, "models": [1]} for i in range(1001)]

    with CaptureQueriesContext(connection) as queries:
        response = api.post(GROUPS_BATCH, {"groups": groups}, format="json")

    assert response.status_code == 400
    assert error_code(response) == "invalid_batch"
    assert len(queries) <= 2  # the management key's lookup, nothing about the items


def test_a_body_over_the_control_limit_is_413(api: APIClient, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    groups = bodies(20)

    response = api.post(GROUPS_BATCH, {"groups": groups}, format="json")

    assert response.status_code == 413


def test_a_batch_queries_a_fixed_number_of_times(
    api: APIClient, endpoints: list, django_assert_max_num_queries: Any
) -> None:
    api.post(GROUPS_BATCH, {"groups": bodies(2, "warm")}, format="json")

    with CaptureQueriesContext(connection) as small:
        api.post(GROUPS_BATCH, {"groups": bodies(2, "s")}, format="json")
    with CaptureQueriesContext(connection) as large:
        api.post(GROUPS_BATCH, {"groups": bodies(50, "l")}, format="json")

    assert len(large) == len(small)


def test_another_workspace_cannot_parent_or_mint_into_our_groups(
    api: APIClient, other_api: APIClient, group: dict, endpoints: list, other_group: Group
) -> None:
    child = group_body("spy", model("globex/llama"), parent_group_id=group["id"])

    created = other_api.post(GROUPS_BATCH, {"groups": [child]}, format="json")
    minted = other_api.post(KEYS_BATCH, {"keys": [{"group_id": group["id"]}]}, format="json")

    assert created.status_code == 400 and error_code(created) == "parent_not_found"
    assert minted.status_code == 400 and error_code(minted) == "group_not_found"
    assert minted.json()["error"]["param"] == "keys[0].group_id"
    assert not ApiKey.objects.filter(group_id=group["id"]).exists()
    assert Group.objects.filter(external_entity_id="spy").count() == 0


def test_a_view_key_cannot_batch(viewer: APIClient, group: dict) -> None:
    groups = viewer.post(GROUPS_BATCH, {"groups": bodies(1)}, format="json")
    keys = viewer.post(KEYS_BATCH, {"keys": [{"group_id": group["id"]}]}, format="json")

    assert groups.status_code == keys.status_code == 403


def test_batch_routes_need_a_key_and_a_post(group: dict, api: APIClient) -> None:
    assert APIClient().post(GROUPS_BATCH, {"groups": []}, format="json").status_code == 401
    assert APIClient().post(KEYS_BATCH, {"keys": []}, format="json").status_code == 401
    assert api.get(GROUPS_BATCH).status_code == 405
    assert api.get(KEYS_BATCH).status_code == 405


def test_a_key_batch_mints_working_keys_once_each(api: APIClient, endpoints: list) -> None:
    items = api.post(GROUPS_BATCH, {"groups": bodies(3)}, format="json").json()["items"]
    wanted = [{"group_id": item["id"], "name": f"k{i}"} for i, item in enumerate(items)]
    wanted.append({"group_id": items[0]["id"], "expires_at": "2999-01-01T00:00:00Z"})

    response = api.post(KEYS_BATCH, {"keys": wanted}, format="json")

    minted = response.json()["items"]
    assert response.status_code == 200, minted
    assert [m["group_id"] for m in minted] == [w["group_id"] for w in wanted]
    assert minted[3]["expires_at"] == "2999-01-01T00:00:00.000Z"
    assert set(minted[0]) == {"api_key", "prefix", "name", "group_id"}
    for m in minted:
        stored = ApiKey.objects.get(prefix=m["prefix"])
        assert stored.key_hash == key_hash(m["api_key"])
        assert m["api_key"] not in str(AuditEvent.objects.filter(object_id=stored.id).values())
        listed = api.get(f"/v1/gateway/groups/{m['group_id']}/api_keys/{m['prefix']}")
        assert listed.status_code == 200
    assert AuditEvent.objects.filter(action="api_key.create").count() == 4


@pytest.mark.parametrize(
    ("item", "code", "param"),
    [
        ({"group_id": "grp_missing"}, "group_not_found", "keys[1].group_id"),
        ({}, "required", "keys[1].group_id"),
        ({"group_id": "G", "expires_at": PAST}, "expires_at_past", "keys[1].expires_at"),
        ({"group_id": "G", "colour": 1}, "unknown_field", "keys[1].colour"),
    ],
)
def test_a_bad_key_item_mints_nothing(
    api: APIClient, group: dict, item: dict, code: str, param: str
) -> None:
    item = {k: (group["id"] if v == "G" else v) for k, v in item.items()}

    response = api.post(KEYS_BATCH, {"keys": [{"group_id": group["id"]}, item]}, format="json")

    assert response.status_code == 400, response.content
    assert error_code(response) == code
    assert response.json()["error"]["param"] == param
    assert not ApiKey.objects.exists()


def test_a_legacy_user_is_not_a_group_for_a_key_batch(api: APIClient, user: dict) -> None:
    response = api.post(KEYS_BATCH, {"keys": [{"group_id": user["id"]}]}, format="json")

    assert response.status_code == 400
    assert error_code(response) == "group_not_found"
