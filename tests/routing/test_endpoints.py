"""Endpoint create / update / delete through the services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import IntegrityError

from gateway_project.kernel.errors import NotFound, ValidationFailed
from groups.models import AuditEvent, GroupModel, Secret, Workspace
from groups.services import group_create
from groups.services.audit import SYSTEM_ACTOR
from routing.models import Endpoint, Target
from routing.selectors import endpoint_get, endpoint_list, endpoint_live_slugs, endpoint_targets
from routing.services import endpoint_create, endpoint_delete, endpoint_update
from tests.routing.conftest import baseten, compat, openai


def create(workspace: Workspace, slug: str = "acme/llama", **kwargs: Any) -> Endpoint:
    kwargs.setdefault("targets", [compat()])
    return endpoint_create(workspace=workspace, actor=SYSTEM_ACTOR, slug=slug, **kwargs)


def error_of(call: Callable[[], Any]) -> tuple[str, str | None]:
    with pytest.raises(ValidationFailed) as exc:
        call()
    return exc.value.code, exc.value.param


def test_create_stores_ordered_targets_in_their_wire_shape(
    workspace: Workspace, secret: Secret
) -> None:
    endpoint = create(
        workspace, targets=[baseten(secret_id=secret.id), compat(), openai(secret.id)], region="EU"
    )

    stored = endpoint_get(workspace=workspace, endpoint_id=endpoint.id)
    assert (stored.slug, stored.region) == ("acme/llama", "EU")
    assert endpoint_targets(endpoint=stored) == [
        {
            "provider": "BASETEN",
            "model_id": "abcd1234",
            "environment_name": "production",
            "secret_id": secret.id,
            "weight": 1,
        },
        {
            "provider": "OPENAI_COMPATIBLE",
            "base_url": "http://127.0.0.1:8000/v1",
            "target_model": "meta-llama/Llama-3-70b",
            "secret_id": None,
            "weight": 1,
        },
        {"provider": "OPENAI", "target_model": "gpt-4o-mini", "secret_id": secret.id, "weight": 1},
    ]


def test_create_is_audited_and_invalidates(
    workspace: Workspace, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        endpoint = create(workspace)

    event = AuditEvent.objects.get(object_id=endpoint.id)
    assert event.action == "endpoint.create"
    assert event.after is not None and event.after["slug"] == "acme/llama"
    assert len(callbacks) == 1


@pytest.mark.parametrize(
    "slug",
    [
        "llama",
        "acme/",
        "/llama",
        "acme/llama/70b",
        "Acme/llama",
        "acme/Llama",
        "acme/-llama",
        "acme/.llama",
        "acme/ll ama",
        "acme/" + "x" * 101,
        "acme/llama?x",
        42,
        None,
    ],
)
def test_malformed_slugs_are_refused(workspace: Workspace, slug: Any) -> None:
    assert error_of(lambda: create(workspace, slug)) == ("invalid_slug", "slug")


def test_slug_segments_may_use_dots_underscores_and_dashes(workspace: Workspace) -> None:
    endpoint = create(workspace, "acme/llama-3.1_70b")

    assert endpoint.slug == "acme/llama-3.1_70b"
    assert create(workspace, "acme/" + "x" * 100).slug.endswith("x" * 100)


def test_slug_prefix_must_be_owned_by_the_workspace(
    workspace: Workspace, other_workspace: Workspace
) -> None:
    assert error_of(lambda: create(workspace, "globex/llama")) == ("slug_prefix_not_owned", "slug")
    assert error_of(lambda: create(workspace, "nobody/llama")) == ("slug_prefix_not_owned", "slug")


def test_live_slugs_are_unique(workspace: Workspace) -> None:
    create(workspace)

    assert error_of(lambda: create(workspace)) == ("slug_taken", "slug")


def test_a_racing_duplicate_is_reported_as_slug_taken(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from routing import services

    create(workspace)
    # Simulate the loser of a race: the existence check passes, the unique index refuses.
    monkeypatch.setattr(services, "slug_check", lambda *, workspace, slug: slug)

    assert error_of(lambda: create(workspace)) == ("slug_taken", "slug")


def test_the_database_refuses_two_live_endpoints_with_one_slug(workspace: Workspace) -> None:
    Endpoint.objects.create(workspace=workspace, slug="acme/x")

    with pytest.raises(IntegrityError):
        Endpoint.objects.create(workspace=workspace, slug="acme/x")


def test_region_must_be_known(workspace: Workspace) -> None:
    assert error_of(lambda: create(workspace, region="US")) == ("invalid_region", "region")


def test_delete_frees_the_slug_and_stops_listing(
    workspace: Workspace, django_capture_on_commit_callbacks: Any
) -> None:
    endpoint = create(workspace)

    with django_capture_on_commit_callbacks() as callbacks:
        deleted = endpoint_delete(workspace=workspace, endpoint_id=endpoint.id, actor="staff:ann")

    assert deleted.deleted_at is not None and len(callbacks) == 1
    assert list(endpoint_list(workspace=workspace)) == []
    assert endpoint_live_slugs(workspace_id=workspace.id, slugs=["acme/llama"]) == set()
    assert AuditEvent.objects.filter(object_id=endpoint.id, action="endpoint.delete").exists()
    assert create(workspace).id != endpoint.id


def test_deleted_or_foreign_endpoints_are_not_found(
    workspace: Workspace, other_workspace: Workspace
) -> None:
    endpoint = create(workspace)

    with pytest.raises(NotFound):
        endpoint_get(workspace=other_workspace, endpoint_id=endpoint.id)
    with pytest.raises(NotFound):
        endpoint_update(
            workspace=other_workspace,
            endpoint_id=endpoint.id,
            actor=SYSTEM_ACTOR,
            targets=[compat()],
        )
    with pytest.raises(NotFound):
        endpoint_delete(workspace=other_workspace, endpoint_id=endpoint.id, actor=SYSTEM_ACTOR)
    endpoint_delete(workspace=workspace, endpoint_id=endpoint.id, actor=SYSTEM_ACTOR)
    with pytest.raises(NotFound):
        endpoint_delete(workspace=workspace, endpoint_id=endpoint.id, actor=SYSTEM_ACTOR)
    with pytest.raises(NotFound):
        endpoint_get(workspace=workspace, endpoint_id=endpoint.id)


def test_update_replaces_the_target_list(
    workspace: Workspace,
    secret: Secret,
    default_baseten_secret: Secret,
    django_capture_on_commit_callbacks: Any,
) -> None:
    endpoint = create(workspace, targets=[compat(), baseten()])

    with django_capture_on_commit_callbacks() as callbacks:
        endpoint_update(
            workspace=workspace,
            endpoint_id=endpoint.id,
            actor=SYSTEM_ACTOR,
            targets=[openai(secret.id)],
        )

    assert [t.provider for t in Target.objects.filter(endpoint=endpoint)] == ["OPENAI"]
    event = AuditEvent.objects.get(object_id=endpoint.id, action="endpoint.update")
    assert event.before is not None and event.after is not None
    assert len(event.before["targets"]) == 2 and len(event.after["targets"]) == 1
    assert len(callbacks) == 1


def test_update_with_invalid_targets_changes_nothing(workspace: Workspace) -> None:
    endpoint = create(workspace)

    error_of(
        lambda: endpoint_update(
            workspace=workspace, endpoint_id=endpoint.id, actor=SYSTEM_ACTOR, targets=[]
        )
    )

    assert Target.objects.filter(endpoint=endpoint).count() == 1


def test_rename_follows_into_group_models(workspace: Workspace) -> None:
    endpoint = create(workspace)
    group = group_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        external_entity_id="c1",
        models=[{"slug": "acme/llama", "rate_limits": [], "usage_limits": []}],
    )

    endpoint_update(
        workspace=workspace, endpoint_id=endpoint.id, actor=SYSTEM_ACTOR, slug="acme/llama-v2"
    )

    assert endpoint_get(workspace=workspace, endpoint_id=endpoint.id).slug == "acme/llama-v2"
    assert list(GroupModel.objects.filter(group=group).values_list("slug", flat=True)) == [
        "acme/llama-v2"
    ]


def test_rename_obeys_the_slug_rules(workspace: Workspace, other_workspace: Workspace) -> None:
    endpoint = create(workspace)
    create(workspace, "acme/taken")

    def rename(slug: str) -> Any:
        return lambda: endpoint_update(
            workspace=workspace, endpoint_id=endpoint.id, actor=SYSTEM_ACTOR, slug=slug
        )

    assert error_of(rename("acme/taken")) == ("slug_taken", "slug")
    assert error_of(rename("globex/llama")) == ("slug_prefix_not_owned", "slug")
    assert error_of(rename("acme/BAD")) == ("invalid_slug", "slug")


def test_renaming_to_the_same_slug_is_a_no_op(workspace: Workspace) -> None:
    endpoint = create(workspace)

    endpoint_update(
        workspace=workspace, endpoint_id=endpoint.id, actor=SYSTEM_ACTOR, slug="acme/llama"
    )

    assert endpoint_get(workspace=workspace, endpoint_id=endpoint.id).slug == "acme/llama"


def test_live_slugs_are_scoped_to_the_workspace(
    workspace: Workspace, other_workspace: Workspace
) -> None:
    create(workspace)
    create(workspace, "acme/gone")
    endpoint_delete(
        workspace=workspace,
        endpoint_id=Endpoint.objects.get(slug="acme/gone").id,
        actor=SYSTEM_ACTOR,
    )

    live = endpoint_live_slugs(workspace_id=workspace.id, slugs=["acme/llama", "acme/gone", "x/y"])

    assert live == {"acme/llama"}
    assert endpoint_live_slugs(workspace_id=other_workspace.id, slugs=["acme/llama"]) == set()
