"""group_update: renames, model replacement and the hierarchy rules in both directions."""

from __future__ import annotations

from typing import Any

import pytest

from gateway_project.kernel.errors import NotFound, ValidationFailed
from groups.models import AuditEvent, Group, Workspace
from groups.selectors import group_effective_models, group_models
from groups.services import group_update
from groups.services.audit import SYSTEM_ACTOR
from tests.groups.conftest import GroupFactory, model


def _update(group: Group, **kwargs: Any) -> Group:
    return group_update(workspace=group.workspace, group_id=group.id, actor=SYSTEM_ACTOR, **kwargs)


def _rejected(group: Group, **kwargs: Any) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as caught:
        _update(group, **kwargs)
    return caught.value


def test_models_replace_the_whole_set(make_group: GroupFactory) -> None:
    group = make_group([model("acme/llama", rate={"TOKEN/MINUTE": 5}), model("acme/qwen")])

    _update(group, models=[model("acme/mistral", usage={"REQUEST/DAY": 7})])

    assert group_models(group=Group.objects.get(pk=group.pk)) == [
        model("acme/mistral", usage={"REQUEST/DAY": 7})
    ]


def test_a_refreshed_instance_reads_models_written_meanwhile(make_group: GroupFactory) -> None:
    group = make_group([model("acme/llama", rate={"TOKEN/MINUTE": 5})])
    held = Group.objects.get(pk=group.pk)
    assert group_models(group=held) == [model("acme/llama", rate={"TOKEN/MINUTE": 5})]

    _update(group, models=[model("acme/qwen", usage={"REQUEST/DAY": 3})])
    held.refresh_from_db()

    assert group_models(group=held) == [model("acme/qwen", usage={"REQUEST/DAY": 3})]


def test_empty_models_remove_all_access(make_group: GroupFactory) -> None:
    group = make_group()

    _update(group, models=[])

    assert group_models(group=Group.objects.get(pk=group.pk)) == []


def test_name_alone_keeps_the_models(make_group: GroupFactory) -> None:
    group = make_group([model(rate={"TOKEN/SECOND": 1})])

    _update(group, name="renamed")

    fresh = Group.objects.get(pk=group.pk)
    assert fresh.name == "renamed"
    assert group_models(group=fresh) == [model(rate={"TOKEN/SECOND": 1})]


def test_update_writes_before_and_after_to_the_audit(make_group: GroupFactory) -> None:
    group = make_group(name="old")

    _update(group, name="new")

    event = AuditEvent.objects.get(object_id=group.id, action="group.update")
    assert event.before is not None and event.after is not None
    assert (event.before["name"], event.after["name"]) == ("old", "new")


def test_update_validates_like_create(make_group: GroupFactory) -> None:
    group = make_group()

    assert _rejected(group, models=[model("acme/nope")]).code == "unknown_slug"
    assert _rejected(group, models=[model(), model()]).code == "duplicate_slug"
    assert _rejected(group, name="n" * 256).code == "invalid_name"


def test_deleted_or_foreign_group_is_not_found(
    make_group: GroupFactory, other_workspace: Workspace
) -> None:
    group = make_group()

    with pytest.raises(NotFound):
        group_update(workspace=other_workspace, group_id=group.id, actor=SYSTEM_ACTOR, name="x")


def test_child_cannot_gain_a_slug_its_parent_lacks(make_group: GroupFactory) -> None:
    parent = make_group([model("acme/llama")])
    child = make_group([model("acme/llama")], parent=parent)

    error = _rejected(child, models=[model("acme/qwen")])

    assert (error.code, error.param) == ("slug_not_in_parent", "models[0].slug")


def test_parent_cannot_drop_a_slug_a_live_child_uses(make_group: GroupFactory) -> None:
    parent = make_group([model("acme/llama"), model("acme/qwen")])
    make_group([model("acme/qwen")], parent=parent)

    error = _rejected(parent, models=[model("acme/llama")])

    assert error.code == "slug_in_use_by_child"


def test_parent_may_drop_a_slug_no_child_uses(make_group: GroupFactory) -> None:
    parent = make_group([model("acme/llama"), model("acme/qwen")])
    make_group([model("acme/qwen")], parent=parent)

    updated = _update(parent, models=[model("acme/qwen")])

    assert [m["slug"] for m in group_models(group=updated)] == ["acme/qwen"]


def test_cascading_parent_cannot_go_below_a_grandchild(make_group: GroupFactory) -> None:
    root = make_group([model(rate={"TOKEN/MINUTE": 100})], limit_enforcement="CASCADING")
    child = make_group([model()], parent=root)
    make_group([model(rate={"TOKEN/MINUTE": 80})], parent=child)

    error = _rejected(root, models=[model(rate={"TOKEN/MINUTE": 50})])

    assert (error.code, error.param) == (
        "ceiling_below_descendant",
        "models[0].rate_limits[0].threshold",
    )
    assert "lower descendants first" in error.message


def test_cascading_child_cannot_be_raised_above_an_ancestor(make_group: GroupFactory) -> None:
    root = make_group([model(usage={"TOKEN/DAY": 100})], limit_enforcement="CASCADING")
    child = make_group([model(usage={"TOKEN/DAY": 50})], parent=root)

    error = _rejected(child, models=[model(usage={"TOKEN/DAY": 101})])

    assert (error.code, error.param) == ("ceiling_exceeded", "models[0].usage_limits[0].threshold")


def test_cascading_edits_within_the_ceilings_are_accepted(make_group: GroupFactory) -> None:
    root = make_group([model(rate={"TOKEN/MINUTE": 100})], limit_enforcement="CASCADING")
    child = make_group([model(rate={"TOKEN/MINUTE": 80})], parent=root)

    _update(root, models=[model(rate={"TOKEN/MINUTE": 80})])
    updated = _update(child, models=[model(rate={"TOKEN/MINUTE": 10})])

    assert group_models(group=updated)[0]["rate_limits"][0]["threshold"] == 10


def test_independent_parent_may_go_below_its_child(make_group: GroupFactory) -> None:
    root = make_group([model(rate={"TOKEN/MINUTE": 100})])
    make_group([model(rate={"TOKEN/MINUTE": 80})], parent=root)

    updated = _update(root, models=[model(rate={"TOKEN/MINUTE": 1})])

    assert group_models(group=updated)[0]["rate_limits"][0]["threshold"] == 1


def test_descendants_follow_a_parent_edit_at_once(make_group: GroupFactory) -> None:
    root = make_group([model(rate={"TOKEN/MINUTE": 100})])
    child = make_group([model()], parent=root)

    _update(root, models=[model(rate={"TOKEN/MINUTE": 7})])

    limits = group_effective_models(group=Group.objects.get(pk=child.pk))[0]["rate_limits"]
    assert limits == [{"type": "TOKEN", "unit": "MINUTE", "threshold": 7, "source_group": root.id}]
