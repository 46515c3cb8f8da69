"""A workspace's upstream allowlist: set by staff in the admin, validated, the global default
otherwise; a malformed global default stops the gateway at startup."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from django.test import Client

from gateway_project.env import BASE_DIR
from gateway_project.kernel.errors import ValidationFailed
from gateway_project.kernel.netguard import allowlist_effective
from groups.models import AuditEvent, Workspace
from groups.services import workspace_set_upstream_allowlist
from groups.services.audit import SYSTEM_ACTOR

pytestmark = pytest.mark.django_db


def _form(workspace: Workspace, allowlist: str) -> dict[str, str]:
    """The change form as posted, with the management forms of its read-only inlines."""
    form = {"name": workspace.name, "ed25519_public_key": "", "upstream_allowlist": allowlist}
    for prefix, rows in (
        ("org_prefixes", workspace.org_prefixes.all()),
        ("custom_domains", workspace.custom_domains.all()),
    ):
        form |= {f"{prefix}-TOTAL_FORMS": str(len(rows)), f"{prefix}-INITIAL_FORMS": str(len(rows))}
        form |= {f"{prefix}-{i}-id": str(row.pk) for i, row in enumerate(rows)}
    return form


def test_staff_set_a_workspace_allowlist_in_the_admin(
    admin_client: Client, workspace: Workspace
) -> None:
    url = f"/admin/groups/workspace/{workspace.pk}/change/"

    response = admin_client.post(url, _form(workspace, "10.20.0.1/16, vLLM.lab.internal.\n::1"))

    assert response.status_code == 302, response.content[:2000]
    workspace.refresh_from_db()
    assert workspace.upstream_allowlist == ["10.20.0.0/16", "vllm.lab.internal", "::1/128"]
    audit = AuditEvent.objects.get(object_id=workspace.pk, action="workspace.upstream_allowlist")
    assert (
        audit.after is not None
        and audit.after["upstream_allowlist"] == workspace.upstream_allowlist
    )
    assert "vllm.lab.internal" in admin_client.get(url).content.decode()


def test_a_bad_allowlist_entry_is_a_form_error(admin_client: Client, workspace: Workspace) -> None:
    url = f"/admin/groups/workspace/{workspace.pk}/change/"

    response = admin_client.post(url, _form(workspace, "10.0.0.0/8\nhttp://evil.example/"))

    assert response.status_code == 200
    [error] = response.context["adminform"].form.errors["upstream_allowlist"]
    assert "http://evil.example/" in error
    workspace.refresh_from_db()
    assert workspace.upstream_allowlist is None


def test_an_emptied_allowlist_falls_back_to_the_global_default(
    admin_client: Client, workspace: Workspace, settings: Any
) -> None:
    settings.GATEWAY_UPSTREAM_ALLOWLIST = ["127.0.0.0/8"]
    workspace_set_upstream_allowlist(
        workspace=workspace, entries=["10.0.0.0/8"], actor=SYSTEM_ACTOR
    )
    own = allowlist_effective(workspace)

    admin_client.post(f"/admin/groups/workspace/{workspace.pk}/change/", _form(workspace, ""))

    workspace.refresh_from_db()
    assert own == ["10.0.0.0/8"]
    assert workspace.upstream_allowlist is None
    assert allowlist_effective(workspace) == ["127.0.0.0/8"]


@pytest.mark.parametrize("entries", [["*"], ["10.0.0"], "10.0.0.0/8", ["10.0.0.0/33"]])
def test_the_service_refuses_a_malformed_allowlist(workspace: Workspace, entries: Any) -> None:
    with pytest.raises(ValidationFailed) as refused:
        workspace_set_upstream_allowlist(workspace=workspace, entries=entries, actor=SYSTEM_ACTOR)

    assert refused.value.code == "invalid_allowlist"
    assert refused.value.param == "upstream_allowlist"


def test_a_malformed_global_allowlist_stops_startup_with_a_clear_error() -> None:
    env = {**os.environ, "GATEWAY_UPSTREAM_ALLOWLIST": "127.0.0.0/8,10.0.0.0/33"}

    run = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert run.returncode != 0
    assert "ImproperlyConfigured: GATEWAY_UPSTREAM_ALLOWLIST: '10.0.0.0/33'" in run.stderr
