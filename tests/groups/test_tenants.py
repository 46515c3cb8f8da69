"""Workspaces, org prefixes, custom domains and secrets; invalidation after commit."""

from __future__ import annotations

from typing import Any

import pytest
from django_redis import get_redis_connection

from gateway_project.kernel.encryption import decrypt
from gateway_project.kernel.errors import ValidationFailed
from gateway_project.kernel.invalidation import VERSION_KEY
from groups.models import AuditEvent, Group, Workspace
from groups.selectors import group_models
from groups.services import (
    custom_domain_add,
    group_delete,
    group_models_rename_slug,
    group_update,
    org_prefix_register,
    secret_create,
    secret_update,
    user_upsert,
    workspace_create,
    workspace_set_onboarded,
)
from groups.services.audit import SYSTEM_ACTOR
from keys.models import ApiKey
from keys.services import api_key_create
from tests.groups.conftest import GroupFactory, model


def _version() -> int:
    return int(get_redis_connection("default").get(VERSION_KEY) or 0)


def test_workspace_create_and_onboarding_are_audited(db: None) -> None:
    workspace = workspace_create(name="Initech", actor="staff:ann")

    workspace_set_onboarded(workspace=workspace, onboarded=True, actor="staff:ann")

    assert Workspace.objects.get(pk=workspace.pk).onboarded is True
    actions = set(
        AuditEvent.objects.filter(object_id=workspace.id).values_list("action", flat=True)
    )
    assert actions == {"workspace.create", "workspace.onboard"}


def test_onboarding_change_is_published_after_commit(
    workspace: Workspace, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        workspace_set_onboarded(workspace=workspace, onboarded=False, actor=SYSTEM_ACTOR)
        assert _version() == 0

    assert len(callbacks) == 1
    assert _version() == 1


@pytest.mark.parametrize(
    "mutate",
    [
        lambda g: group_update(workspace=g.workspace, group_id=g.id, actor=SYSTEM_ACTOR, name="x"),
        lambda g: group_delete(workspace=g.workspace, group_id=g.id, actor=SYSTEM_ACTOR),
    ],
)
def test_group_edits_are_published_after_commit(
    make_group: GroupFactory, django_capture_on_commit_callbacks: Any, mutate: Any
) -> None:
    group = make_group()

    with django_capture_on_commit_callbacks(execute=True):
        mutate(group)

    assert _version() == 1


@pytest.mark.django_db(transaction=True)
def test_failed_group_edit_publishes_nothing(
    workspace: Workspace, endpoints: tuple[str, ...]
) -> None:
    from groups.services import group_create

    group = group_create(
        workspace=workspace, actor=SYSTEM_ACTOR, external_entity_id="c", models=[model()]
    )

    with pytest.raises(ValidationFailed):
        group_update(
            workspace=workspace, group_id=group.id, actor=SYSTEM_ACTOR, models=[model("acme/x")]
        )
    group_update(workspace=workspace, group_id=group.id, actor=SYSTEM_ACTOR, name="ok")

    assert _version() == 1


def test_org_prefix_is_validated_and_globally_unique(
    workspace: Workspace, other_workspace: Workspace
) -> None:
    org_prefix_register(workspace=workspace, prefix="initech", actor=SYSTEM_ACTOR)

    for prefix, code in (
        ("initech", "prefix_taken"),
        ("globex", "prefix_taken"),
        ("Bad/x", "invalid_prefix"),
    ):
        with pytest.raises(ValidationFailed) as caught:
            org_prefix_register(workspace=other_workspace, prefix=prefix, actor=SYSTEM_ACTOR)
        assert caught.value.code == code


def test_custom_domain_is_normalized_unique_and_published(
    workspace: Workspace, other_workspace: Workspace, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        domain = custom_domain_add(workspace=workspace, host="API.Acme.com.", actor=SYSTEM_ACTOR)

    assert domain.host == "api.acme.com" and _version() == 1
    for host, code in (
        ("api.acme.com", "host_taken"),
        ("http://x.com", "invalid_host"),
        ("", "invalid_host"),
    ):
        with pytest.raises(ValidationFailed) as caught:
            custom_domain_add(workspace=other_workspace, host=host, actor=SYSTEM_ACTOR)
        assert caught.value.code == code


def test_secret_is_stored_encrypted_and_never_audited_in_clear(workspace: Workspace) -> None:
    secret = secret_create(
        workspace=workspace, name="openai", value="sk-live-1", actor=SYSTEM_ACTOR
    )

    secret_update(secret=secret, value="sk-live-2", actor=SYSTEM_ACTOR)

    assert b"sk-live" not in bytes(secret.ciphertext)
    assert decrypt(secret.ciphertext) == "sk-live-2"
    audited = list(AuditEvent.objects.filter(object_id=secret.id).values_list("before", "after"))
    assert len(audited) == 2 and "sk-live" not in repr(audited)


def test_secret_names_are_unique_per_workspace(workspace: Workspace) -> None:
    secret_create(workspace=workspace, name="openai", value="v", actor=SYSTEM_ACTOR)

    with pytest.raises(ValidationFailed) as caught:
        secret_create(workspace=workspace, name="openai", value="v", actor=SYSTEM_ACTOR)

    assert caught.value.code == "secret_name_taken"


def test_empty_secret_value_is_rejected(workspace: Workspace) -> None:
    with pytest.raises(ValidationFailed) as caught:
        secret_create(workspace=workspace, name="openai", value="", actor=SYSTEM_ACTOR)

    assert caught.value.code == "invalid_secret_value"


def test_endpoint_rename_follows_into_group_models(
    make_group: GroupFactory, workspace: Workspace
) -> None:
    group = make_group([model("acme/llama", rate={"TOKEN/MINUTE": 3}), model("acme/qwen")])

    group_models_rename_slug(
        workspace_id=workspace.id, old_slug="acme/llama", new_slug="acme/llama-2"
    )

    models = group_models(group=Group.objects.get(pk=group.pk))
    assert [m["slug"] for m in models] == ["acme/llama-2", "acme/qwen"]
    assert models[0]["rate_limits"][0]["threshold"] == 3


def test_secret_changes_are_published_after_commit(
    workspace: Workspace, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        secret = secret_create(workspace=workspace, name="k", value="v1", actor=SYSTEM_ACTOR)
    with django_capture_on_commit_callbacks(execute=True):
        secret_update(secret=secret, value="v2", actor=SYSTEM_ACTOR)

    assert _version() == 2


def test_endpoint_rename_follows_into_legacy_key_subsets(
    endpoints: tuple[str, ...], workspace: Workspace
) -> None:
    user, _created = user_upsert(
        workspace=workspace,
        customer_id="c",
        models=[model("acme/llama"), model("acme/qwen")],
        actor=SYSTEM_ACTOR,
    )
    key, _plaintext = api_key_create(
        workspace=workspace, group=user, actor=SYSTEM_ACTOR, slugs=["acme/llama"]
    )

    group_models_rename_slug(workspace_id=workspace.id, old_slug="acme/llama", new_slug="acme/l2")

    assert ApiKey.objects.get(pk=key.pk).slugs == ["acme/l2"]
