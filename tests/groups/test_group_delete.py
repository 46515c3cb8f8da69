"""group_delete: recursive soft delete, key revocation, freed external ids, audit."""

from __future__ import annotations

import pytest

from gateway_project.kernel.errors import NotFound
from groups.models import AuditEvent, Group, Workspace
from groups.selectors import group_get, group_list
from groups.services import group_delete
from groups.services.audit import SYSTEM_ACTOR
from keys.models import ApiKey
from keys.services import api_key_create
from tests.groups.conftest import GroupFactory


def _key(group: Group) -> ApiKey:
    key, _plaintext = api_key_create(workspace=group.workspace, group=group, actor=SYSTEM_ACTOR)
    return key


def test_delete_soft_deletes_the_whole_subtree(
    make_group: GroupFactory, workspace: Workspace
) -> None:
    root = make_group()
    child = make_group(parent=root)
    grandchild = make_group(parent=child)
    sibling = make_group()

    group_delete(workspace=workspace, group_id=child.id, actor=SYSTEM_ACTOR)

    deleted = set(Group.objects.filter(deleted_at__isnull=False).values_list("id", flat=True))
    assert deleted == {child.id, grandchild.id}
    assert [g.id for g in group_list(workspace=workspace)] == [root.id, sibling.id]


def test_delete_revokes_every_key_of_the_subtree(
    make_group: GroupFactory, workspace: Workspace
) -> None:
    root = make_group()
    child = make_group(parent=root)
    keys = [_key(root), _key(child)]
    kept = _key(make_group())

    group_delete(workspace=workspace, group_id=root.id, actor=SYSTEM_ACTOR)

    assert all(ApiKey.objects.get(pk=k.pk).revoked_at is not None for k in keys)
    assert ApiKey.objects.get(pk=kept.pk).revoked_at is None


def test_delete_frees_the_external_id(make_group: GroupFactory, workspace: Workspace) -> None:
    old = make_group(external_entity_id="cust_1")

    group_delete(workspace=workspace, group_id=old.id, actor=SYSTEM_ACTOR)
    new = make_group(external_entity_id="cust_1")

    assert new.id != old.id
    assert group_list(workspace=workspace, external_entity_id="cust_1").get() == new


def test_deleted_group_is_not_found(make_group: GroupFactory, workspace: Workspace) -> None:
    group = make_group()

    group_delete(workspace=workspace, group_id=group.id, actor=SYSTEM_ACTOR)

    with pytest.raises(NotFound):
        group_get(workspace=workspace, group_id=group.id)
    with pytest.raises(NotFound):
        group_delete(workspace=workspace, group_id=group.id, actor=SYSTEM_ACTOR)


def test_delete_audits_every_deleted_group_and_the_revoked_keys(
    make_group: GroupFactory, workspace: Workspace
) -> None:
    root = make_group()
    child = make_group(parent=root)
    key = _key(child)

    group_delete(workspace=workspace, group_id=root.id, actor="staff:ann")

    deletes = AuditEvent.objects.filter(action="group.delete", actor="staff:ann")
    assert set(deletes.values_list("object_id", flat=True)) == {root.id, child.id}
    revocation = AuditEvent.objects.get(action="api_key.revoke_subtree")
    assert revocation.after == {"revoked_key_prefixes": [key.prefix]}


def test_delete_of_another_workspace_group_is_not_found(
    make_group: GroupFactory, other_workspace: Workspace
) -> None:
    group = make_group()

    with pytest.raises(NotFound):
        group_delete(workspace=other_workspace, group_id=group.id, actor=SYSTEM_ACTOR)

    assert Group.objects.get(pk=group.pk).deleted_at is None
