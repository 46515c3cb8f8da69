"""A workspace's default Baseten secret: set by staff in the admin, only one of its own secrets."""

from __future__ import annotations

import pytest
from django.test import Client

from gateway_project.kernel.errors import ValidationFailed
from groups.models import AuditEvent, Secret, Workspace
from groups.services import secret_create, workspace_set_default_baseten_secret
from groups.services.audit import SYSTEM_ACTOR
from tests.groups.test_upstream_allowlist import _form

pytestmark = pytest.mark.django_db


def _secret(workspace: Workspace, name: str = "baseten") -> Secret:
    return secret_create(workspace=workspace, name=name, value="bt-value-1", actor=SYSTEM_ACTOR)


def _change(admin_client: Client, workspace: Workspace, secret_id: str) -> object:
    form = _form(workspace, "") | {"default_baseten_secret": secret_id}
    return admin_client.post(f"/admin/groups/workspace/{workspace.pk}/change/", form)


def test_staff_set_the_default_in_the_admin(admin_client: Client, workspace: Workspace) -> None:
    secret = _secret(workspace)

    response = _change(admin_client, workspace, secret.id)

    assert getattr(response, "status_code", None) == 302
    workspace.refresh_from_db()
    assert workspace.default_baseten_secret_id == secret.id
    audit = AuditEvent.objects.get(action="workspace.default_baseten_secret")
    assert audit.after is not None and audit.after["default_baseten_secret"] == secret.id
    assert "bt-value-1" not in str(audit.after)


def test_the_admin_offers_and_accepts_only_the_workspaces_own_secrets(
    admin_client: Client, workspace: Workspace, other_workspace: Workspace
) -> None:
    own, foreign = _secret(workspace), _secret(other_workspace, "theirs")

    page = admin_client.get(f"/admin/groups/workspace/{workspace.pk}/change/").content.decode()
    response = _change(admin_client, workspace, foreign.id)

    assert own.id in page and foreign.id not in page
    assert getattr(response, "status_code", None) == 200
    workspace.refresh_from_db()
    assert workspace.default_baseten_secret_id is None


def test_the_service_refuses_another_workspaces_secret(
    workspace: Workspace, other_workspace: Workspace
) -> None:
    foreign = _secret(other_workspace)

    with pytest.raises(ValidationFailed) as exc:
        workspace_set_default_baseten_secret(
            workspace=workspace, secret=foreign, actor=SYSTEM_ACTOR
        )

    assert exc.value.code == "secret_not_found"
    workspace.refresh_from_db()
    assert workspace.default_baseten_secret_id is None
