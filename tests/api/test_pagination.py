"""Cursor pagination: limits, opaque cursors, stable walks, constant query counts."""

from __future__ import annotations

import base64

import pytest
from rest_framework.test import APIClient

from groups import services as group_services
from groups.models import Workspace
from groups.services.audit import SYSTEM_ACTOR
from keys import services as key_services
from tests.api.conftest import endpoint_make, error_code, model

pytestmark = pytest.mark.django_db


def groups_make(workspace: Workspace, count: int, *, start: int = 0) -> list[str]:
    return [
        group_services.group_create(
            workspace=workspace,
            actor=SYSTEM_ACTOR,
            external_entity_id=f"ext_{start + index}",
            models=[model("acme/llama", rpm=10)],
        ).id
        for index in range(count)
    ]


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "abc", "1.5", ""])
def test_limit_outside_1_to_1000_is_400(api: APIClient, limit: str) -> None:
    response = api.get("/v1/gateway/groups", {"limit": limit})

    assert response.status_code == 400
    assert error_code(response) == "invalid_limit"


@pytest.mark.parametrize("cursor", ["!!!", "bm90LWFuLWlk", base64.b64encode(b"\xff\xfe").decode()])
def test_a_cursor_we_did_not_issue_is_400(api: APIClient, cursor: str) -> None:
    response = api.get("/v1/gateway/groups", {"cursor": cursor})

    assert response.status_code == 400
    assert error_code(response) == "invalid_cursor"


def test_default_page_is_100(api: APIClient, workspace: Workspace, endpoints: list) -> None:
    groups_make(workspace, 101)

    body = api.get("/v1/gateway/groups").json()

    assert len(body["items"]) == 100
    assert body["pagination"]["has_more"] is True
    assert isinstance(body["pagination"]["cursor"], str)


def test_last_page_has_no_cursor(api: APIClient, workspace: Workspace, endpoints: list) -> None:
    groups_make(workspace, 3)

    body = api.get("/v1/gateway/groups", {"limit": 3}).json()

    assert len(body["items"]) == 3
    assert body["pagination"] == {"has_more": False, "cursor": None}


def test_walk_of_250_groups_has_no_duplicate_and_no_gap_while_rows_are_added(
    api: APIClient, workspace: Workspace, endpoints: list
) -> None:
    created = groups_make(workspace, 250)
    seen: list[str] = []
    cursor = None
    pages = 0

    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        body = api.get("/v1/gateway/groups", params).json()
        seen += [item["id"] for item in body["items"]]
        created += groups_make(workspace, 5, start=1000 + pages * 5)
        pages += 1
        cursor = body["pagination"]["cursor"]
        if not body["pagination"]["has_more"]:
            break

    assert len(seen) == len(set(seen))
    assert seen == sorted(created)[: len(seen)]
    assert set(created[:250]) <= set(seen)
    assert pages >= 3


def _list_queries(api: APIClient, path: str, size: int) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        response = api.get(path, {"limit": size})
    assert response.status_code == 200
    assert len(response.json()["items"]) == size
    return len(captured)


def test_groups_list_query_count_does_not_grow_with_page_size(
    api: APIClient, workspace: Workspace, endpoints: list, django_assert_num_queries: object
) -> None:
    root = groups_make(workspace, 1)[0]
    for index in range(50):
        group_services.group_create(
            workspace=workspace,
            actor=SYSTEM_ACTOR,
            external_entity_id=f"child_{index}",
            models=[model("acme/llama", rpm=5)],
            parent_group_id=root,
        )
    api.get("/v1/gateway/groups", {"limit": 1})

    small = _list_queries(api, "/v1/gateway/groups", 5)

    with django_assert_num_queries(small):  # type: ignore[operator]
        api.get("/v1/gateway/groups", {"limit": 50})


def test_endpoints_list_query_count_does_not_grow_with_page_size(
    api: APIClient, workspace: Workspace, django_assert_num_queries: object
) -> None:
    for index in range(50):
        endpoint_make(workspace, f"acme/model-{index}")
    api.get("/v1/gateway/endpoints", {"limit": 1})

    small = _list_queries(api, "/v1/gateway/endpoints", 5)

    with django_assert_num_queries(small):  # type: ignore[operator]
        api.get("/v1/gateway/endpoints", {"limit": 50})


def test_users_list_query_count_does_not_grow_with_page_size(
    api: APIClient, workspace: Workspace, endpoints: list, django_assert_num_queries: object
) -> None:
    for index in range(50):
        group_services.user_upsert(
            workspace=workspace,
            customer_id=f"u{index}",
            models=[model("acme/llama")],
            actor=SYSTEM_ACTOR,
        )
    api.get("/v1/gateway/users", {"limit": 1})

    small = _list_queries(api, "/v1/gateway/users", 5)

    with django_assert_num_queries(small):  # type: ignore[operator]
        api.get("/v1/gateway/users", {"limit": 50})


def test_keys_list_query_count_does_not_grow_with_page_size(
    api: APIClient, workspace: Workspace, endpoints: list, django_assert_num_queries: object
) -> None:
    group = group_services.group_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        external_entity_id="k",
        models=[model("acme/llama")],
    )
    for _ in range(50):
        key_services.api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)
    path = f"/v1/gateway/groups/{group.id}/api_keys"
    api.get(path, {"limit": 1})

    small = _list_queries(api, path, 5)

    with django_assert_num_queries(small):  # type: ignore[operator]
        api.get(path, {"limit": 50})
