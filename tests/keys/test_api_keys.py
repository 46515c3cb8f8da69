"""Minting, listing, resolving and revoking federated keys."""

from __future__ import annotations

import hmac
import re

import pytest
from django.db import connection

from gateway_project.kernel.errors import NotFound, ValidationFailed
from groups.models import AuditEvent, Group, Workspace
from groups.services import group_delete
from groups.services.audit import SYSTEM_ACTOR
from keys import hashing
from keys.models import ApiKey
from keys.selectors import api_key_get, api_key_list, api_key_resolve
from keys.services import api_key_create, api_key_revoke

PREFIX_RE = re.compile(r"^sky_[0-9A-Za-z]{12}$")
SECRET_RE = re.compile(r"^[0-9A-Za-z]{32,}$")


def test_minted_key_has_the_documented_format(workspace: Workspace, group: Group) -> None:
    key, plaintext = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)

    prefix, _, secret = plaintext.partition(".")
    assert PREFIX_RE.match(prefix)
    assert SECRET_RE.match(secret)
    assert key.prefix == prefix


def test_only_the_hash_of_a_minted_key_is_stored(workspace: Workspace, group: Group) -> None:
    key, plaintext = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR, name="n")

    secret = plaintext.split(".", 1)[1]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM keys_apikey WHERE id = %s", [key.id])
        row = [str(value) for value in cursor.fetchone()]
    assert not any(secret in value for value in row)
    assert key.key_hash == hashing.key_hash(plaintext)
    audit_rows = [str(e.after) + str(e.before) for e in AuditEvent.objects.all()]
    assert not any(secret in text for text in audit_rows)
    assert not any(key.key_hash in text for text in audit_rows)


def test_minting_records_an_audit_row(workspace: Workspace, group: Group) -> None:
    key, _ = api_key_create(workspace=workspace, group=group, actor="mgmt:gwm_x", name="ci")

    event = AuditEvent.objects.get(object_id=key.id)
    assert (event.action, event.actor, event.workspace_id) == (
        "api_key.create",
        "mgmt:gwm_x",
        workspace.id,
    )
    assert event.after is not None and event.after["prefix"] == key.prefix


def test_a_prefix_collision_mints_again(
    workspace: Workspace, group: Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken, _ = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)
    prefixes = iter([taken.prefix[4:], "A" * 12])
    monkeypatch.setattr(hashing, "random_base62", lambda n: next(prefixes) if n == 12 else "s" * n)

    key, plaintext = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)

    assert key.prefix == "sky_" + "A" * 12
    assert plaintext.startswith(key.prefix + ".")


def test_name_longer_than_255_is_refused(workspace: Workspace, group: Group) -> None:
    with pytest.raises(ValidationFailed) as exc:
        api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR, name="x" * 256)

    assert exc.value.code == "invalid_name"


def test_keys_of_another_workspace_group_cannot_be_minted(
    other_workspace: Workspace, group: Group
) -> None:
    with pytest.raises(NotFound):
        api_key_create(workspace=other_workspace, group=group, actor=SYSTEM_ACTOR)


def test_legacy_key_subset_within_the_users_models_is_kept(
    workspace: Workspace, legacy_user: Group
) -> None:
    key, _ = api_key_create(
        workspace=workspace, group=legacy_user, actor=SYSTEM_ACTOR, slugs=["acme/llama"]
    )

    assert key.slugs == ["acme/llama"]


def test_legacy_key_subset_cannot_exceed_the_users_models(
    workspace: Workspace, legacy_user: Group
) -> None:
    with pytest.raises(ValidationFailed) as exc:
        api_key_create(
            workspace=workspace, group=legacy_user, actor=SYSTEM_ACTOR, slugs=["acme/qwen"]
        )

    assert (exc.value.code, exc.value.param) == ("slugs_not_allowed", "models")
    assert not ApiKey.objects.exists()


def test_group_keys_cannot_carry_a_model_subset(workspace: Workspace, group: Group) -> None:
    with pytest.raises(ValidationFailed) as exc:
        api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR, slugs=["acme/llama"])

    assert exc.value.code == "slugs_not_allowed"


def test_resolve_finds_a_live_key_by_a_constant_time_hash_check(
    workspace: Workspace, group: Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, plaintext = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)
    compared: list[str] = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)

    found = api_key_resolve(plaintext=plaintext)

    assert found is not None and found.id == key.id
    assert found.group.id == group.id and found.workspace.id == workspace.id
    assert compared == [key.key_hash]


def test_resolve_rejects_a_wrong_secret_with_the_right_prefix(
    workspace: Workspace, group: Group
) -> None:
    _, plaintext = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)

    assert (
        api_key_resolve(plaintext=plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
    )
    assert api_key_resolve(plaintext="sky_short") is None


def test_resolve_takes_one_query(
    workspace: Workspace, group: Group, django_assert_num_queries
) -> None:
    _, plaintext = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)

    with django_assert_num_queries(1):
        key = api_key_resolve(plaintext=plaintext)
        assert key is not None
        assert key.group.external_entity_id == "cust_1" and key.workspace.onboarded


def test_resolve_ignores_revoked_keys(workspace: Workspace, group: Group) -> None:
    key, plaintext = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)

    api_key_revoke(workspace=workspace, prefix=key.prefix, actor=SYSTEM_ACTOR)

    assert api_key_resolve(plaintext=plaintext) is None


def test_resolve_ignores_keys_of_deleted_groups(workspace: Workspace, group: Group) -> None:
    key, plaintext = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)

    # A raw update, as if the revoking cascade of group_delete had missed the key.
    Group.objects.filter(pk=group.pk).update(deleted_at=key.created_at)

    assert api_key_resolve(plaintext=plaintext) is None


def test_resolve_ignores_keys_of_offboarded_workspaces(workspace: Workspace, group: Group) -> None:
    _, plaintext = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)

    Workspace.objects.filter(pk=workspace.pk).update(onboarded=False)

    assert api_key_resolve(plaintext=plaintext) is None


def test_group_delete_revokes_its_keys(workspace: Workspace, group: Group) -> None:
    _, plaintext = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)

    group_delete(workspace=workspace, group_id=group.id, actor=SYSTEM_ACTOR)

    assert api_key_resolve(plaintext=plaintext) is None


def test_list_and_get_show_live_keys_in_creation_order(workspace: Workspace, group: Group) -> None:
    first, _ = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR, name="a")
    second, _ = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR, name="b")
    revoked, _ = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR, name="c")
    api_key_revoke(workspace=workspace, prefix=revoked.prefix, actor=SYSTEM_ACTOR)

    listed = [k.prefix for k in api_key_list(group=group)]

    assert listed == [first.prefix, second.prefix]
    assert api_key_get(group=group, prefix=second.prefix).name == "b"
    with pytest.raises(NotFound):
        api_key_get(group=group, prefix=revoked.prefix)


def test_revoke_is_audited_and_invalidates_caches(
    workspace: Workspace, group: Group, django_capture_on_commit_callbacks
) -> None:
    import redis
    from django.conf import settings

    key, _ = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)
    client = redis.Redis.from_url(settings.REDIS_URL)
    before = int(client.get("gw:cfg:version") or 0)

    with django_capture_on_commit_callbacks(execute=True):
        api_key_revoke(workspace=workspace, prefix=key.prefix, actor="staff:ann")

    key.refresh_from_db()
    assert key.revoked_at is not None
    event = AuditEvent.objects.get(object_id=key.id, action="api_key.revoke")
    assert event.actor == "staff:ann" and event.after is not None and event.after["revoked_at"]
    assert int(client.get("gw:cfg:version") or 0) == before + 1


def test_revoke_twice_is_not_found(workspace: Workspace, group: Group) -> None:
    key, _ = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)
    api_key_revoke(workspace=workspace, prefix=key.prefix, actor=SYSTEM_ACTOR)

    with pytest.raises(NotFound):
        api_key_revoke(workspace=workspace, prefix=key.prefix, actor=SYSTEM_ACTOR)


def test_revoke_is_scoped_to_workspace_and_group(
    workspace: Workspace, other_workspace: Workspace, group: Group, legacy_user: Group
) -> None:
    key, plaintext = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)

    with pytest.raises(NotFound):
        api_key_revoke(workspace=other_workspace, prefix=key.prefix, actor=SYSTEM_ACTOR)
    with pytest.raises(NotFound):
        api_key_revoke(
            workspace=workspace, prefix=key.prefix, actor=SYSTEM_ACTOR, group=legacy_user
        )
    with pytest.raises(NotFound):
        api_key_revoke(workspace=workspace, prefix="sky_unknown00000", actor=SYSTEM_ACTOR)

    assert api_key_resolve(plaintext=plaintext) is not None
