"""Groups API: hierarchy, PATCH, cascading ceilings, delete, validation codes."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from groups.models import AuditEvent, Group, Workspace
from keys.models import ApiKey
from tests.api.conftest import error_code, group_body, model

pytestmark = pytest.mark.django_db

GROUPS = "/v1/gateway/groups"


def create(api: APIClient, body: dict[str, Any]) -> Any:
    return api.post(GROUPS, body, format="json")


def test_create_returns_group_v1(api: APIClient, group: dict) -> None:
    assert set(group) == {"id", "metadata", "models", "effective_models", "hierarchy", "created_at"}
    assert group["metadata"] == {"name": "Group cust_1", "external_entity_id": "cust_1"}
    assert group["hierarchy"] == {"limit_enforcement": "INDEPENDENT", "parent_group_id": None}
    assert group["models"] == [model("acme/llama", rpm=100, tpd=10_000)]
    assert group["effective_models"][0]["rate_limits"][0]["source_group"] == group["id"]
    assert group["created_at"].endswith("Z")


def test_child_inherits_mode_and_effective_limits(api: APIClient, endpoints: list) -> None:
    root = create(
        api, group_body("root", model("acme/llama", rpm=100), limit_enforcement="CASCADING")
    )
    root_id = root.json()["id"]

    child = create(api, group_body("child", model("acme/llama", rpm=10), parent_group_id=root_id))

    body = child.json()
    assert child.status_code == 200, body
    assert body["hierarchy"] == {"limit_enforcement": "CASCADING", "parent_group_id": root_id}
    assert body["effective_models"][0]["rate_limits"][0]["threshold"] == 10


def test_list_filters_by_external_entity_id(api: APIClient, group: dict, endpoints: list) -> None:
    create(api, group_body("cust_2", model("acme/llama")))

    exact = api.get(GROUPS, {"external_entity_id": "cust_1"}).json()["items"]
    none = api.get(GROUPS, {"external_entity_id": "cust"}).json()["items"]

    assert [g["id"] for g in exact] == [group["id"]]
    assert none == []


def test_list_excludes_legacy_users(api: APIClient, group: dict, user: dict) -> None:
    ids = [g["id"] for g in api.get(GROUPS).json()["items"]]

    assert ids == [group["id"]]
    assert api.get(f"{GROUPS}/{user['id']}").status_code == 404


def test_patch_renames_and_replaces_models(api: APIClient, group: dict) -> None:
    response = api.patch(
        f"{GROUPS}/{group['id']}",
        {"metadata": {"name": "renamed"}, "models": [model("acme/mistral")]},
        format="json",
    )

    body = response.json()
    assert response.status_code == 200, body
    assert body["metadata"]["name"] == "renamed"
    assert [m["slug"] for m in body["models"]] == ["acme/mistral"]


def test_patch_with_empty_models_removes_all_access(api: APIClient, group: dict) -> None:
    response = api.patch(f"{GROUPS}/{group['id']}", {"models": []}, format="json")

    assert response.status_code == 200
    assert response.json()["models"] == []


def test_descendants_effective_limits_follow_the_parent(api: APIClient, endpoints: list) -> None:
    root = create(api, group_body("r", model("acme/llama", rpm=100))).json()
    child = create(api, group_body("c", model("acme/llama"), parent_group_id=root["id"])).json()

    api.patch(f"{GROUPS}/{root['id']}", {"models": [model("acme/llama", rpm=7)]}, format="json")

    fetched = api.get(f"{GROUPS}/{child['id']}").json()
    assert fetched["effective_models"][0]["rate_limits"][0] == {
        "type": "REQUEST",
        "unit": "MINUTE",
        "threshold": 7,
        "source_group": root["id"],
    }


def test_cascading_ceilings_are_checked_both_ways(api: APIClient, endpoints: list) -> None:
    root = create(
        api, group_body("r", model("acme/llama", rpm=100), limit_enforcement="CASCADING")
    ).json()
    child = create(
        api, group_body("c", model("acme/llama", rpm=50), parent_group_id=root["id"])
    ).json()

    raise_child = api.patch(
        f"{GROUPS}/{child['id']}", {"models": [model("acme/llama", rpm=101)]}, format="json"
    )
    lower_root = api.patch(
        f"{GROUPS}/{root['id']}", {"models": [model("acme/llama", rpm=10)]}, format="json"
    )

    assert raise_child.status_code == 400
    assert error_code(raise_child) == "ceiling_exceeded"
    assert lower_root.status_code == 400
    assert error_code(lower_root) == "ceiling_below_descendant"


def test_delete_soft_deletes_the_subtree_and_frees_the_external_id(
    api: APIClient, endpoints: list
) -> None:
    root = create(api, group_body("r", model("acme/llama"))).json()
    child = create(api, group_body("c", model("acme/llama"), parent_group_id=root["id"])).json()
    key = api.post(f"{GROUPS}/{child['id']}/api_keys", {}, format="json").json()

    deleted = api.delete(f"{GROUPS}/{root['id']}")

    assert deleted.status_code == 200
    assert set(deleted.json()) == {"id", "metadata", "deleted_at"}
    assert deleted.json()["deleted_at"].endswith("Z")
    assert api.get(f"{GROUPS}/{child['id']}").status_code == 404
    assert api.delete(f"{GROUPS}/{root['id']}").status_code == 404
    assert api.get(f"{GROUPS}/{child['id']}/api_keys/{key['prefix']}").status_code == 404
    assert create(api, group_body("r", model("acme/llama"))).status_code == 200


def test_delete_revokes_the_keys_of_the_whole_subtree(api: APIClient, endpoints: list) -> None:
    root = create(api, group_body("r", model("acme/llama"))).json()
    child = create(api, group_body("c", model("acme/llama"), parent_group_id=root["id"])).json()
    other = create(api, group_body("o", model("acme/llama"))).json()
    prefixes = [
        api.post(f"{GROUPS}/{group['id']}/api_keys", {}, format="json").json()["prefix"]
        for group in (root, child, other)
    ]

    deleted = api.delete(f"{GROUPS}/{root['id']}")

    revoked = ApiKey.objects.filter(prefix__in=prefixes, revoked_at__isnull=False)
    assert deleted.status_code == 200
    assert sorted(revoked.values_list("prefix", flat=True)) == sorted(prefixes[:2])
    assert AuditEvent.objects.get(action="api_key.revoke_subtree", object_id=root["id"]).after == {
        "revoked_key_prefixes": sorted(prefixes[:2])
    }


def test_group_mutations_are_audited(api: APIClient, manage_key: str, group: dict) -> None:
    api.patch(f"{GROUPS}/{group['id']}", {"metadata": {"name": "x"}}, format="json")
    api.delete(f"{GROUPS}/{group['id']}")

    actions = list(
        AuditEvent.objects.filter(object_id=group["id"])
        .order_by("created_at")
        .values_list("action", "actor")
    )

    actor = f"mgmt:{manage_key[:16]}"
    assert actions[:3] == [
        ("group.create", actor),
        ("group.update", actor),
        ("group.delete", actor),
    ]
    assert {a for _action, a in actions} == {actor}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (group_body("x"), "models_required"),
        (group_body("x", model("acme/unknown")), "unknown_slug"),
        (group_body("x", model("acme/llama"), model("acme/llama")), "duplicate_slug"),
        (
            group_body(
                "x",
                {
                    "slug": "acme/llama",
                    "rate_limits": [
                        {"type": "TOKEN", "unit": "MINUTE", "threshold": 1},
                        {"type": "TOKEN", "unit": "SECOND", "threshold": 1},
                    ],
                },
            ),
            "duplicate_limit",
        ),
        (
            group_body(
                "x",
                {
                    "slug": "acme/llama",
                    "rate_limits": [{"type": "TOKEN", "unit": "DAY", "threshold": 1}],
                },
            ),
            "invalid_limit_unit",
        ),
        (
            group_body(
                "x",
                {
                    "slug": "acme/llama",
                    "usage_limits": [{"type": "TOKEN", "unit": "MINUTE", "threshold": 1}],
                },
            ),
            "invalid_limit_unit",
        ),
        (
            group_body(
                "x",
                {
                    "slug": "acme/llama",
                    "rate_limits": [{"type": "BYTES", "unit": "MINUTE", "threshold": 1}],
                },
            ),
            "invalid_limit_type",
        ),
        (
            group_body(
                "x",
                {
                    "slug": "acme/llama",
                    "rate_limits": [{"type": "TOKEN", "unit": "MINUTE", "threshold": -1}],
                },
            ),
            "invalid_threshold",
        ),
        (
            group_body(
                "x",
                {
                    "slug": "acme/llama",
                    "rate_limits": [{"type": "TOKEN", "unit": "MINUTE", "threshold": "1"}],
                },
            ),
            "invalid_threshold",
        ),
        (group_body("x", {"slug": "acme/llama", "shadow": 1}), "unknown_field"),
        (group_body("x", model("acme/llama"), limit_enforcement="SOMETIMES"), "invalid_choice"),
        (group_body("x", model("acme/llama"), parent_group_id="grp_nope"), "parent_not_found"),
        ({"metadata": {"external_entity_id": ""}, "models": [model("acme/llama")]}, "blank"),
        (
            {"metadata": {"external_entity_id": "x" * 256}, "models": [model("acme/llama")]},
            "max_length",
        ),
        (
            {
                "metadata": {"external_entity_id": "x", "name": "n" * 256},
                "models": [model("acme/llama")],
            },
            "max_length",
        ),
        ({"models": [model("acme/llama")]}, "required"),
        ({"metadata": {"external_entity_id": "x"}}, "required"),
        ({"metadata": {"external_entity_id": "x"}, "models": "acme/llama"}, "invalid_type"),
    ],
)
def test_create_validation_codes(api: APIClient, endpoints: list, body: dict, code: str) -> None:
    response = create(api, body)

    assert response.status_code == 400, response.content
    assert error_code(response) == code


def test_duplicate_external_id_is_400(api: APIClient, group: dict) -> None:
    response = create(api, group_body("cust_1", model("acme/llama")))

    assert response.status_code == 400
    assert error_code(response) == "external_id_taken"


def test_child_rules(api: APIClient, endpoints: list) -> None:
    root = create(api, group_body("r", model("acme/llama"), limit_enforcement="CASCADING")).json()
    parent = root["id"]

    mode = create(
        api,
        group_body(
            "a", model("acme/llama"), parent_group_id=parent, limit_enforcement="INDEPENDENT"
        ),
    )
    subset = create(api, group_body("b", model("acme/mistral"), parent_group_id=parent))
    for depth in range(2, 6):
        parent = create(
            api, group_body(f"d{depth}", model("acme/llama"), parent_group_id=parent)
        ).json()["id"]
    too_deep = create(api, group_body("d6", model("acme/llama"), parent_group_id=parent))

    assert error_code(mode) == "mode_mismatch"
    assert error_code(subset) == "slug_not_in_parent"
    assert too_deep.status_code == 400
    assert error_code(too_deep) == "depth_exceeded"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "empty_update"),
        ({"hierarchy": {"limit_enforcement": "CASCADING"}}, "immutable_field"),
        ({"metadata": {"external_entity_id": "new"}}, "immutable_field"),
        ({"metadata": {}}, "required"),
        ({"metadata": {"name": "n" * 256}}, "max_length"),
        ({"models": [model("acme/unknown")]}, "unknown_slug"),
        ({"surprise": True}, "unknown_field"),
    ],
)
def test_patch_validation_codes(api: APIClient, group: dict, body: dict, code: str) -> None:
    response = api.patch(f"{GROUPS}/{group['id']}", body, format="json")

    assert response.status_code == 400, response.content
    assert error_code(response) == code
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_unknown_slugs_name_the_route_that_creates_them(api: APIClient, group: dict) -> None:
    created = api.post(GROUPS, group_body("new", model("acme/unknown")), format="json")
    patched = api.patch(
        f"{GROUPS}/{group['id']}", {"models": [model("acme/unknown")]}, format="json"
    )

    for response in (created, patched):
        assert error_code(response) == "unknown_slug"
        assert "POST /v1/gateway/endpoints" in response.json()["error"]["message"]


@pytest.fixture
def key_verified(monkeypatch: pytest.MonkeyPatch) -> None:
    """The management key stays verified for the whole test: the counts are the view's own."""
    monkeypatch.setattr("keys.authentication.VERIFIED_TTL_S", 3600.0)


@pytest.mark.usefixtures("key_verified")
def test_create_and_get_take_a_fixed_few_queries(
    api: APIClient, endpoints: list, django_assert_max_num_queries: Any
) -> None:
    create(api, group_body("warm", model("acme/llama", rpm=1)))  # the key's last use is recorded

    # The test's transaction makes the create's a savepoint (+2): endpoints, group, models,
    # limits, audit.
    with django_assert_max_num_queries(7):
        created = create(api, group_body("cust_q", model("acme/llama", rpm=1, tpd=5)))
    with django_assert_max_num_queries(1):  # the group with its models and limits
        fetched = api.get(f"{GROUPS}/{created.json()['id']}")

    assert created.json() == fetched.json()


@pytest.mark.usefixtures("key_verified")
def test_lookup_by_external_id_and_usage_take_one_query(
    api: APIClient, group: dict, django_assert_max_num_queries: Any
) -> None:
    with django_assert_max_num_queries(1):  # the group with its models and limits
        found = api.get(GROUPS, {"external_entity_id": "cust_1"})
    with django_assert_max_num_queries(1):
        usage = api.get(f"{GROUPS}/{group['id']}/usage")

    assert found.json()["items"] == [group]
    assert usage.status_code == 200


def test_lookup_by_external_id_answers_as_get_for_children_and_groups_without_models(
    api: APIClient, endpoints: list, workspace: Workspace
) -> None:
    root_id = create(api, group_body("root_x", model("acme/llama", rpm=5, tpd=9))).json()["id"]
    child = create(api, group_body("kid_x", model("acme/llama"), parent_group_id=root_id)).json()
    unlimited = create(api, group_body("open_x", model("acme/mistral"), model("acme/llama")))
    bare = Group(workspace=workspace, external_entity_id="bare_x")  # the API always gives models
    bare.root_id = bare.id
    bare.save(force_insert=True)

    found = {
        ext_id: api.get(GROUPS, {"external_entity_id": ext_id}).json()["items"]
        for ext_id in ("bare_x", "kid_x", "open_x")
    }

    assert found == {
        "bare_x": [api.get(f"{GROUPS}/{bare.id}").json()],
        "kid_x": [child],
        "open_x": [unlimited.json()],
    }
    assert found["bare_x"][0]["models"] == found["bare_x"][0]["effective_models"] == []
    assert api.get(f"{GROUPS}/{child['id']}").json() == child
    assert child["effective_models"][0]["rate_limits"][0]["source_group"] == root_id


@pytest.mark.usefixtures("key_verified")
def test_patch_takes_a_fixed_few_queries(
    api: APIClient, endpoints: list, django_assert_max_num_queries: Any
) -> None:
    group_id = create(api, group_body("cust_p", model("acme/llama", rpm=1, tpd=5))).json()["id"]
    replaced = [model("acme/llama", rpm=2), model("acme/mistral", tpd=7)]

    # The test's transaction makes the update's a savepoint (+2): the group read under its lock,
    # its models (the audit's before), UPDATE, audit.
    with django_assert_max_num_queries(6):
        renamed = api.patch(f"{GROUPS}/{group_id}", {"metadata": {"name": "n"}}, format="json")
    # The old models and limits go in two DELETEs.
    with django_assert_max_num_queries(12):
        remodelled = api.patch(f"{GROUPS}/{group_id}", {"models": replaced}, format="json")

    assert renamed.json()["metadata"]["name"] == "n"
    assert remodelled.json()["models"] == replaced
    assert api.get(f"{GROUPS}/{group_id}").json() == remodelled.json()


@pytest.mark.parametrize(
    "body",
    [{"metadata": {"name": 5}}, {"hierarchy": {}}, {}, {"models": [{"slug": "acme/nope"}]}],
)
def test_patch_of_a_group_not_in_the_workspace_is_404_whatever_its_body(
    api: APIClient, other_api: APIClient, group: dict, body: dict
) -> None:
    unknown = api.patch(f"{GROUPS}/grp_unknown", body, format="json")
    theirs = other_api.patch(f"{GROUPS}/{group['id']}", body, format="json")

    assert (unknown.status_code, error_code(unknown)) == (404, "not_found")
    assert (theirs.status_code, error_code(theirs)) == (404, "not_found")


def test_patch_of_a_child_locks_its_tree_and_renames_it(api: APIClient, endpoints: list) -> None:
    root_id = create(api, group_body("root_p", model("acme/llama", rpm=5))).json()["id"]
    child = create(api, group_body("child_p", model("acme/llama"), parent_group_id=root_id)).json()

    renamed = api.patch(f"{GROUPS}/{child['id']}", {"metadata": {"name": "kid"}}, format="json")

    assert renamed.status_code == 200
    assert renamed.json() == {**child, "metadata": {**child["metadata"], "name": "kid"}}


@pytest.mark.usefixtures("key_verified")
def test_a_list_page_takes_a_fixed_few_queries(
    api: APIClient, endpoints: list, django_assert_max_num_queries: Any
) -> None:
    root_id = create(api, group_body("root_l", model("acme/llama", rpm=5, tpd=9))).json()["id"]
    for index in range(3):
        create(api, group_body(f"kid_{index}", model("acme/llama"), parent_group_id=root_id))
        create(api, group_body(f"solo_{index}", model("acme/mistral", tpd=index + 1)))

    with django_assert_max_num_queries(3):  # page, the children's ancestors, every models
        page = api.get(f"{GROUPS}?limit=100").json()["items"]

    assert len(page) == 7
    assert page == [api.get(f"{GROUPS}/{item['id']}").json() for item in page]
