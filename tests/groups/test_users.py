"""Legacy federated users: root INDEPENDENT groups keyed by customer_id."""

from __future__ import annotations

import pytest

from gateway_project.kernel.errors import NotFound, ValidationFailed
from groups.models import Group, Workspace
from groups.selectors import group_get, group_models
from groups.services import user_delete, user_upsert
from groups.services.audit import SYSTEM_ACTOR
from tests.groups.conftest import GroupFactory, model


@pytest.fixture
def users_ready(endpoints: tuple[str, ...]) -> None:
    """Live endpoints exist."""


def test_upsert_creates_a_root_independent_legacy_group(
    workspace: Workspace, users_ready: None
) -> None:
    user, created = user_upsert(
        workspace=workspace, customer_id="c1", models=[model()], actor=SYSTEM_ACTOR
    )

    assert created is True
    assert (user.external_entity_id, user.is_legacy_user, user.depth) == ("c1", True, 1)
    assert user.limit_enforcement == "INDEPENDENT" and user.root_id == user.id


def test_upsert_again_replaces_the_models(workspace: Workspace, users_ready: None) -> None:
    first, _ = user_upsert(
        workspace=workspace, customer_id="c1", models=[model()], actor=SYSTEM_ACTOR
    )

    again, created = user_upsert(
        workspace=workspace, customer_id="c1", models=[model("acme/qwen")], actor=SYSTEM_ACTOR
    )

    assert created is False and again.id == first.id
    assert [m["slug"] for m in group_models(group=again)] == ["acme/qwen"]
    assert Group.objects.filter(external_entity_id="c1").count() == 1


def test_upsert_cannot_take_over_a_group_external_id(
    workspace: Workspace, make_group: GroupFactory
) -> None:
    make_group(external_entity_id="c1")

    with pytest.raises(ValidationFailed) as caught:
        user_upsert(workspace=workspace, customer_id="c1", models=[model()], actor=SYSTEM_ACTOR)

    assert (caught.value.code, caught.value.param) == ("external_id_taken", "customer_id")


def test_upsert_validates_models(workspace: Workspace, users_ready: None) -> None:
    with pytest.raises(ValidationFailed) as caught:
        user_upsert(workspace=workspace, customer_id="c1", models=[], actor=SYSTEM_ACTOR)

    assert caught.value.code == "models_required"


def test_user_delete_soft_deletes_only_legacy_users(
    workspace: Workspace, make_group: GroupFactory
) -> None:
    user, _ = user_upsert(
        workspace=workspace, customer_id="c1", models=[model()], actor=SYSTEM_ACTOR
    )
    group = make_group()

    user_delete(workspace=workspace, user_id=user.id, actor=SYSTEM_ACTOR)

    with pytest.raises(NotFound):
        group_get(workspace=workspace, group_id=user.id, legacy=True)
    with pytest.raises(NotFound):
        user_delete(workspace=workspace, user_id=group.id, actor=SYSTEM_ACTOR)
