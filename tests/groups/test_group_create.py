"""group_create: every hierarchy rule on creation."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from gateway_project.kernel.errors import ValidationFailed
from groups.models import AuditEvent, Group, Workspace
from groups.selectors import group_models
from groups.services import group_create
from groups.services.audit import SYSTEM_ACTOR
from groups.services.hierarchy import group_row_insert
from tests.groups.conftest import GroupFactory, model


def _rejected(make_group: GroupFactory, *args: Any, **kwargs: Any) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as caught:
        make_group(*args, **kwargs)
    return caught.value


def test_root_group_is_created_with_its_models_and_defaults(make_group: GroupFactory) -> None:
    configured = [
        model(
            "acme/llama",
            rate={"TOKEN/MINUTE": 1000, "REQUEST/MINUTE": 100},
            usage={"TOKEN/DAY": 10},
        ),
        model("acme/qwen"),
    ]

    group = make_group(configured, name="Acme prod", external_entity_id="cust_42")

    group.refresh_from_db()
    assert (group.name, group.external_entity_id, group.depth) == ("Acme prod", "cust_42", 1)
    assert group.limit_enforcement == "INDEPENDENT"
    assert group.root_id == group.id and group.parent_id is None
    assert group_models(group=group) == configured


def test_child_inherits_the_parent_mode_and_tree(make_group: GroupFactory) -> None:
    parent = make_group(limit_enforcement="CASCADING")

    child = make_group(parent=parent)

    assert child.limit_enforcement == "CASCADING"
    assert (child.depth, child.root_id, child.parent_id) == (2, parent.id, parent.id)


def test_creation_writes_an_audit_row(make_group: GroupFactory) -> None:
    group = make_group([model("acme/llama", rate={"TOKEN/SECOND": 5})])

    event = AuditEvent.objects.get(object_id=group.id, action="group.create")

    assert event.actor == SYSTEM_ACTOR and event.workspace_id == group.workspace_id
    assert event.after is not None
    assert event.after["models"][0]["rate_limits"] == [
        {"type": "TOKEN", "unit": "SECOND", "threshold": 5}
    ]


@pytest.mark.parametrize("external_id", ["", "x" * 256, 42, None])
def test_external_entity_id_must_be_1_to_255_chars(
    make_group: GroupFactory, external_id: Any
) -> None:
    error = _rejected(make_group, external_entity_id=external_id)

    assert (error.code, error.param) == (
        "invalid_external_entity_id",
        "metadata.external_entity_id",
    )


def test_external_entity_id_of_255_chars_is_accepted(make_group: GroupFactory) -> None:
    group = make_group(external_entity_id="x" * 255)

    assert len(group.external_entity_id) == 255


def test_external_entity_id_is_unique_among_live_groups(make_group: GroupFactory) -> None:
    make_group(external_entity_id="cust_1")

    error = _rejected(make_group, external_entity_id="cust_1")

    assert (error.code, error.param) == ("external_id_taken", "metadata.external_entity_id")


def test_external_entity_id_may_repeat_across_workspaces(
    make_group: GroupFactory, other_workspace: Workspace
) -> None:
    from routing.models import Endpoint

    make_group(external_entity_id="cust_1")
    Endpoint.objects.create(workspace=other_workspace, slug="globex/llama")

    group_create(
        workspace=other_workspace,
        actor=SYSTEM_ACTOR,
        external_entity_id="cust_1",
        models=[model("globex/llama")],
    )

    assert Group.objects.filter(external_entity_id="cust_1").count() == 2


def test_database_constraint_race_is_reported_as_external_id_taken(
    make_group: GroupFactory, workspace: Workspace
) -> None:
    winner = make_group(external_entity_id="cust_1")
    loser = Group(workspace=workspace, external_entity_id="cust_1", root_id=None, depth=1)

    # Inside its caller's transaction (group_create's), which the error rolls back.
    with pytest.raises(ValidationFailed) as caught, transaction.atomic():
        group_row_insert(loser, param="metadata.external_entity_id")

    assert caught.value.code == "external_id_taken"
    assert Group.objects.filter(external_entity_id="cust_1").get() == winner


def test_name_longer_than_255_is_rejected(make_group: GroupFactory) -> None:
    error = _rejected(make_group, name="n" * 256)

    assert (error.code, error.param) == ("invalid_name", "metadata.name")


def test_models_are_required_on_create(make_group: GroupFactory) -> None:
    error = _rejected(make_group, [])

    assert (error.code, error.param) == ("models_required", "models")


def test_duplicate_slug_is_rejected(make_group: GroupFactory) -> None:
    error = _rejected(make_group, [model("acme/llama"), model("acme/llama")])

    assert (error.code, error.param) == ("duplicate_slug", "models[1].slug")


def test_slug_must_be_a_live_endpoint_of_the_workspace(
    make_group: GroupFactory, other_workspace: Workspace
) -> None:
    from routing.models import Endpoint

    Endpoint.objects.create(workspace=other_workspace, slug="globex/llama")
    Endpoint.objects.filter(slug="acme/qwen").update(deleted_at="2026-01-01T00:00:00Z")

    for slug in ("acme/nope", "globex/llama", "acme/qwen"):
        error = _rejected(make_group, [model("acme/llama"), model(slug)])

        assert (error.code, error.param) == ("unknown_slug", "models[1].slug")


@pytest.mark.parametrize(
    ("limit", "code", "param"),
    [
        ({"type": "TOKENS", "unit": "MINUTE", "threshold": 1}, "invalid_limit_type", "type"),
        ({"type": "TOKEN", "unit": "DAY", "threshold": 1}, "invalid_limit_unit", "unit"),
        ({"type": "TOKEN", "unit": "HOUR", "threshold": 1}, "invalid_limit_unit", "unit"),
        ({"type": "TOKEN", "unit": "MINUTE", "threshold": -1}, "invalid_threshold", "threshold"),
        ({"type": "TOKEN", "unit": "MINUTE", "threshold": 1.5}, "invalid_threshold", "threshold"),
        ({"type": "TOKEN", "unit": "MINUTE", "threshold": True}, "invalid_threshold", "threshold"),
        ({"type": "TOKEN", "unit": "MINUTE", "threshold": "5"}, "invalid_threshold", "threshold"),
        ({"type": "TOKEN", "unit": "MINUTE", "threshold": 1, "burst": 2}, "unknown_field", "burst"),
    ],
)
def test_invalid_rate_limits_are_rejected(
    make_group: GroupFactory, limit: dict[str, Any], code: str, param: str
) -> None:
    error = _rejected(make_group, [{"slug": "acme/llama", "rate_limits": [limit]}])

    assert (error.code, error.param) == (code, f"models[0].rate_limits[0].{param}")


def test_usage_limits_only_take_the_day_unit(make_group: GroupFactory) -> None:
    limit = {"type": "TOKEN", "unit": "MINUTE", "threshold": 1}

    error = _rejected(make_group, [{"slug": "acme/llama", "usage_limits": [limit]}])

    assert (error.code, error.param) == ("invalid_limit_unit", "models[0].usage_limits[0].unit")


def test_zero_threshold_is_accepted(make_group: GroupFactory) -> None:
    group = make_group([model(rate={"REQUEST/SECOND": 0}, usage={"TOKEN/DAY": 0})])

    assert group_models(group=group)[0]["rate_limits"][0]["threshold"] == 0


def test_at_most_one_rate_limit_per_type(make_group: GroupFactory) -> None:
    limits = [
        {"type": "TOKEN", "unit": "SECOND", "threshold": 1},
        {"type": "TOKEN", "unit": "MINUTE", "threshold": 10},
    ]

    error = _rejected(make_group, [{"slug": "acme/llama", "rate_limits": limits}])

    assert (error.code, error.param) == ("duplicate_limit", "models[0].rate_limits[1]")


def test_at_most_one_usage_limit_per_type_and_unit(make_group: GroupFactory) -> None:
    limits = [{"type": "REQUEST", "unit": "DAY", "threshold": 1}] * 2

    error = _rejected(make_group, [{"slug": "acme/llama", "usage_limits": limits}])

    assert (error.code, error.param) == ("duplicate_limit", "models[0].usage_limits[1]")


def test_unknown_field_in_a_model_is_rejected(make_group: GroupFactory) -> None:
    error = _rejected(make_group, [{"slug": "acme/llama", "limits": []}])

    assert (error.code, error.param) == ("unknown_field", "models[0].limits")


def test_invalid_limit_enforcement_is_rejected(make_group: GroupFactory) -> None:
    error = _rejected(make_group, limit_enforcement="STRICT")

    assert (error.code, error.param) == ("invalid_limit_enforcement", "hierarchy.limit_enforcement")


def test_child_mode_must_equal_the_parent_mode(make_group: GroupFactory) -> None:
    parent = make_group(limit_enforcement="INDEPENDENT")

    error = _rejected(make_group, parent=parent, limit_enforcement="CASCADING")

    assert (error.code, error.param) == ("mode_mismatch", "hierarchy.limit_enforcement")


def test_parent_must_be_a_live_group_of_the_same_workspace(
    make_group: GroupFactory, workspace: Workspace
) -> None:
    from groups.services import group_delete

    deleted = make_group()
    group_delete(workspace=workspace, group_id=deleted.id, actor=SYSTEM_ACTOR)

    for parent_id in ("grp_missing", deleted.id):
        with pytest.raises(ValidationFailed) as caught:
            group_create(
                workspace=workspace,
                actor=SYSTEM_ACTOR,
                external_entity_id="c",
                models=[model()],
                parent_group_id=parent_id,
            )

        assert (caught.value.code, caught.value.param) == (
            "parent_not_found",
            "hierarchy.parent_group_id",
        )


def test_parent_of_another_workspace_is_not_found(
    make_group: GroupFactory, other_workspace: Workspace
) -> None:
    foreign = make_group()

    with pytest.raises(ValidationFailed) as caught:
        group_create(
            workspace=other_workspace,
            actor=SYSTEM_ACTOR,
            external_entity_id="c",
            models=[model()],
            parent_group_id=foreign.id,
        )

    assert caught.value.code == "parent_not_found"


def test_depth_is_limited_to_five(make_group: GroupFactory) -> None:
    group = make_group()
    for _ in range(4):
        group = make_group(parent=group)
    assert group.depth == 5

    error = _rejected(make_group, parent=group)

    assert (error.code, error.param) == ("depth_exceeded", "hierarchy.parent_group_id")


def test_child_slugs_must_be_a_subset_of_the_parent_slugs(make_group: GroupFactory) -> None:
    parent = make_group([model("acme/llama")])

    error = _rejected(make_group, [model("acme/llama"), model("acme/qwen")], parent=parent)

    assert (error.code, error.param) == ("slug_not_in_parent", "models[1].slug")


def test_cascading_child_cannot_exceed_an_ancestor_ceiling(make_group: GroupFactory) -> None:
    root = make_group([model(rate={"TOKEN/MINUTE": 100})], limit_enforcement="CASCADING")
    parent = make_group([model()], parent=root)

    error = _rejected(make_group, [model(rate={"TOKEN/MINUTE": 101})], parent=parent)

    assert (error.code, error.param) == ("ceiling_exceeded", "models[0].rate_limits[0].threshold")
    assert "raise ancestors first" in error.message


def test_cascading_child_at_the_ceiling_is_accepted(make_group: GroupFactory) -> None:
    root = make_group([model(usage={"TOKEN/DAY": 100})], limit_enforcement="CASCADING")

    child = make_group([model(usage={"TOKEN/DAY": 100}, rate={"TOKEN/SECOND": 5})], parent=root)

    assert child.depth == 2


def test_independent_child_may_exceed_its_parent(make_group: GroupFactory) -> None:
    root = make_group([model(rate={"TOKEN/MINUTE": 100})])

    child = make_group([model(rate={"TOKEN/MINUTE": 1000})], parent=root)

    assert child.limit_enforcement == "INDEPENDENT"


@pytest.mark.parametrize(
    ("models", "param"),
    [
        ({"slug": "acme/llama"}, "models"),
        (["acme/llama"], "models[0]"),
        ([{"slug": "acme/llama", "rate_limits": {}}], "models[0].rate_limits"),
    ],
)
def test_models_of_the_wrong_json_type_are_rejected(
    make_group: GroupFactory, models: Any, param: str
) -> None:
    error = _rejected(make_group, models)

    assert (error.code, error.param) == ("invalid_type", param)
