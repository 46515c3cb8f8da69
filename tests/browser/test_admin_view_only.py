"""Who may change what in the admin, in the browser: a view-only support user is offered no action
that changes anything (a forged action post changes nothing) and cannot edit a workspace's upstream
allowlist; staff who can set it, and the allowlist then holds for that workspace only."""

from __future__ import annotations

from typing import Any

import pytest

from billing.models import WebhookDelivery, WebhookEndpoint, WebhookSecret
from billing.services.webhooks import webhook_endpoint_create
from groups.models import AuditEvent, Group, OrgPrefix, Workspace
from groups.services.audit import SYSTEM_ACTOR
from keys.services import api_key_create, management_key_create
from routing.models import Endpoint
from tests.browser.conftest import Shots, choose, log_in

pytestmark = pytest.mark.slow

VIEWER = ("viewer", "viewer-password-123")


@pytest.fixture
def viewer_page(page: Any, transactional_db: None, shots: Shots) -> Any:
    """`page`, logged in as staff holding every view permission and nothing else."""
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user(VIEWER[0], password=VIEWER[1], is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    log_in(page, *VIEWER)
    page.wait_for_url("**/admin/")
    shots("logged-in")
    return page


def forge_action(page: Any, action: str, pk: str) -> None:
    """Submit the changelist form with an action the page did not offer (as a crafted post)."""
    with page.expect_navigation():
        page.evaluate(
            """([action, pk]) => {
                const form = document.querySelector('#changelist-form');
                for (const [name, value] of [['action', action], ['_selected_action', pk],
                                             ['index', '0']]) {
                    const input = document.createElement('input');
                    input.type = 'hidden'; input.name = name; input.value = value;
                    form.appendChild(input);
                }
                form.submit();
            }""",
            [action, pk],
        )


def test_view_only_staff_see_no_action_and_cannot_forge_one(
    viewer_page: Any, shots: Shots, settings: Any
) -> None:
    settings.GATEWAY_UPSTREAM_ALLOWLIST = ["127.0.0.0/8"]
    workspace = Workspace.objects.create(name="Initech", onboarded=True)
    endpoint, _secret = webhook_endpoint_create(
        workspace=workspace, url="http://127.0.0.1:9/hook", actor=SYSTEM_ACTOR
    )
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint, body=b"{}", event_count=0, status="failed", attempts=10
    )
    group = Group.objects.create(workspace=workspace, external_entity_id="cust")
    key, _plaintext = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)
    manage, _plaintext = management_key_create(workspace=workspace, actor=SYSTEM_ACTOR)
    # Every action that changes anything, on a row it would change.
    attempts = [
        ("/admin/groups/workspace/", workspace.pk, ["onboard", "offboard"]),
        (
            "/admin/billing/webhookendpoint/",
            str(endpoint.pk),
            ["rotate_secret", "rotate_secret_now", "disable", "enable"],
        ),
        ("/admin/billing/webhookdelivery/", delivery.pk, ["resend", "recover_failed_since"]),
        ("/admin/keys/apikey/", str(key.pk), ["revoke_selected", "delete_selected"]),
        ("/admin/keys/managementkey/", str(manage.pk), ["revoke_selected", "delete_selected"]),
    ]
    audit_rows = AuditEvent.objects.count()
    page = viewer_page
    offered: dict[str, int] = {}
    pages: list[str] = []

    for changelist, pk, actions in attempts:
        page.goto(changelist)
        offered[changelist] = page.locator("select[name=action]").count()
        for action in actions:
            page.goto(changelist)
            forge_action(page, action, pk)
            pages.append(page.content())
    shots("after-forged-actions")
    page.goto(f"/admin/groups/workspace/{workspace.pk}/change/")
    shots("workspace-read-only")
    save_buttons = page.locator("input[name=_save]").count()
    allowlist_inputs = page.locator("#id_upstream_allowlist").count()
    page.goto("/admin/billing/webhookdelivery/recover/")
    recover_page = page.content()

    assert set(offered.values()) == {0}, offered
    assert not [content for content in pages if "whsec_" in content]
    assert AuditEvent.objects.count() == audit_rows
    assert WebhookSecret.objects.filter(endpoint=endpoint, expires_at__isnull=True).count() == 1
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).enabled
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == "failed"
    key.refresh_from_db()
    manage.refresh_from_db()
    assert key.revoked_at is None and manage.revoked_at is None
    workspace.refresh_from_db()
    assert workspace.onboarded
    assert save_buttons == 0
    assert allowlist_inputs == 0
    assert "403 Forbidden" in recover_page


def add_endpoint(page: Any, workspace: Workspace, slug: str, base_url: str) -> None:
    page.goto("/admin/routing/endpoint/add/")
    choose(page, "workspace", workspace.name, workspace.pk)
    page.fill("#id_slug", slug)
    page.select_option("#id_targets-0-provider", "OPENAI_COMPATIBLE")
    page.fill("#id_targets-0-base_url", base_url)
    page.fill("#id_targets-0-target_model", "llama-3")
    page.click("input[name=_save]")
    page.wait_for_load_state()


def test_staff_allow_a_private_range_for_one_workspace_only(
    staff_page: Any, shots: Shots, settings: Any
) -> None:
    settings.GATEWAY_UPSTREAM_ALLOWLIST = []
    lab = Workspace.objects.create(name="Initech", onboarded=True)
    other = Workspace.objects.create(name="Globex", onboarded=True)
    OrgPrefix.objects.create(workspace=lab, prefix="initech")
    OrgPrefix.objects.create(workspace=other, prefix="globex")
    page = staff_page

    page.goto(f"/admin/groups/workspace/{lab.pk}/change/")
    page.fill("#id_upstream_allowlist", "127.0.0.0/8\nvllm.initech.internal")
    shots("allowlist-form")
    page.click("input[name=_save]")
    page.wait_for_load_state()
    add_endpoint(page, lab, "initech/llama", "http://127.0.0.1:9/v1")
    shots("lab-endpoint-saved")
    add_endpoint(page, other, "globex/llama", "http://127.0.0.1:9/v1")
    shots("other-endpoint-refused")
    refusal = page.locator(".errorlist").all_inner_texts()

    lab.refresh_from_db()
    assert lab.upstream_allowlist == ["127.0.0.0/8", "vllm.initech.internal"]
    assert Endpoint.objects.filter(slug="initech/llama", workspace=lab).exists()
    assert not Endpoint.objects.filter(slug="globex/llama").exists()
    assert any("upstream allowlist" in text for text in refusal), refusal
