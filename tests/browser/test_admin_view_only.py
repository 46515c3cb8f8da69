"""A view-only support user in the browser: the admin shows what it may read and offers no action
that changes anything; a forged action post changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from billing.models import WebhookEndpoint, WebhookSecret
from billing.services import webhook_endpoint_create
from groups.audit import SYSTEM_ACTOR
from groups.models import Workspace
from tests.browser.conftest import Shots, log_in

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
    page.wait_for_load_state()


def test_view_only_staff_see_no_action_and_cannot_forge_one(
    viewer_page: Any, shots: Shots, settings: Any
) -> None:
    settings.GATEWAY_UPSTREAM_ALLOWLIST = ["127.0.0.0/8"]
    workspace = Workspace.objects.create(name="Initech", onboarded=True)
    endpoint, _secret = webhook_endpoint_create(
        workspace=workspace, url="http://127.0.0.1:9/hook", actor=SYSTEM_ACTOR
    )
    page = viewer_page

    page.goto("/admin/billing/webhookendpoint/")
    shots("webhook-endpoints")
    endpoint_actions = page.locator("select[name=action]").count()
    listed = page.locator("td.field-url, th.field-url", has_text="127.0.0.1").count()
    forge_action(page, "rotate_secret_now", str(endpoint.pk))
    shots("forged-rotation")
    after_rotation = page.content()
    page.goto("/admin/groups/workspace/")
    workspace_actions = page.locator("select[name=action]").count()
    forge_action(page, "offboard", workspace.pk)
    shots("forged-offboard")
    page.goto(f"/admin/groups/workspace/{workspace.pk}/change/")
    shots("workspace-read-only")
    save_buttons = page.locator("input[name=_save]").count()

    assert (endpoint_actions, workspace_actions) == (0, 0)
    assert listed == 1
    assert "whsec_" not in after_rotation
    assert WebhookSecret.objects.filter(endpoint=endpoint, expires_at__isnull=True).count() == 1
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).enabled
    workspace.refresh_from_db()
    assert workspace.onboarded
    assert save_buttons == 0
