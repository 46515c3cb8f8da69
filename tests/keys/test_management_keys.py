"""Management keys: mint, authenticate, revoke."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gateway_project.kernel.errors import NotFound, ValidationFailed
from groups.models import AuditEvent, Workspace
from groups.services.audit import SYSTEM_ACTOR
from keys.models import ManagementKey
from keys.selectors import management_key_authenticate
from keys.services import management_key_create, management_key_revoke


def test_minted_management_key_has_the_gwm_format(workspace: Workspace) -> None:
    key, plaintext = management_key_create(workspace=workspace, actor=SYSTEM_ACTOR, name="ops")

    assert re.match(r"^gwm_[0-9A-Za-z]{12}\.[0-9A-Za-z]{32,}$", plaintext)
    assert key.prefix == plaintext[:16] and key.scope == "MANAGE"
    assert plaintext not in str(list(ManagementKey.objects.values()))
    assert AuditEvent.objects.filter(object_id=key.id, action="management_key.create").exists()


def test_scope_must_be_manage_or_view(workspace: Workspace) -> None:
    with pytest.raises(ValidationFailed) as exc:
        management_key_create(workspace=workspace, actor=SYSTEM_ACTOR, scope="ADMIN")

    assert exc.value.code == "invalid_scope"


def test_authenticate_returns_the_live_key_with_its_workspace(
    workspace: Workspace, django_assert_num_queries
) -> None:
    key, plaintext = management_key_create(workspace=workspace, actor=SYSTEM_ACTOR, scope="VIEW")

    with django_assert_num_queries(1):
        found = management_key_authenticate(plaintext=plaintext)
        assert found is not None and found.workspace.name == "Acme Labs"

    assert found.id == key.id and found.scope == "VIEW"


def test_authenticate_does_not_check_onboarding(workspace: Workspace) -> None:
    _, plaintext = management_key_create(workspace=workspace, actor=SYSTEM_ACTOR)

    Workspace.objects.filter(pk=workspace.pk).update(onboarded=False)

    found = management_key_authenticate(plaintext=plaintext)
    assert found is not None and not found.workspace.onboarded


def test_authenticate_rejects_wrong_secret_and_revoked_keys(workspace: Workspace) -> None:
    key, plaintext = management_key_create(workspace=workspace, actor=SYSTEM_ACTOR)
    wrong = plaintext[:-1] + ("a" if plaintext[-1] != "a" else "b")
    assert management_key_authenticate(plaintext=wrong) is None

    management_key_revoke(workspace=workspace, prefix=key.prefix, actor=SYSTEM_ACTOR)

    assert management_key_authenticate(plaintext=plaintext) is None


def test_revoke_is_irreversible_scoped_and_invalidates(
    workspace: Workspace, other_workspace: Workspace, django_capture_on_commit_callbacks: Any
) -> None:
    key, _ = management_key_create(workspace=workspace, actor=SYSTEM_ACTOR)
    with pytest.raises(NotFound):
        management_key_revoke(workspace=other_workspace, prefix=key.prefix, actor=SYSTEM_ACTOR)

    with django_capture_on_commit_callbacks() as callbacks:
        management_key_revoke(workspace=workspace, prefix=key.prefix, actor="staff:ann")

    with pytest.raises(NotFound):
        management_key_revoke(workspace=workspace, prefix=key.prefix, actor=SYSTEM_ACTOR)
    assert (
        AuditEvent.objects.get(object_id=key.id, action="management_key.revoke").actor
        == "staff:ann"
    )
    assert len(callbacks) == 1
