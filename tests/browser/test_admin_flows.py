"""Support staff's flows in the admin, driven in headless Chromium (screenshots as artifacts)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from billing.models import UsageEvent, WebhookDelivery, WebhookEndpoint
from groups.models import Group, OrgPrefix, Workspace
from groups.services import group_create
from groups.services.audit import SYSTEM_ACTOR
from keys.models import ApiKey
from keys.selectors import api_key_resolve
from routing.models import Endpoint
from routing.services import endpoint_create
from tests.browser.conftest import Shots, choose, log_in

pytestmark = pytest.mark.slow

TARGET = {"provider": "OPENAI_COMPATIBLE", "base_url": "http://127.0.0.1:9/v1", "target_model": "m"}


def model(slug: str, rpm: int) -> dict[str, Any]:
    return {
        "slug": slug,
        "rate_limits": [{"type": "REQUEST", "unit": "MINUTE", "threshold": rpm}],
        "usage_limits": [],
    }


def save(page: Any) -> None:
    page.click("input[name=_save]")
    page.wait_for_load_state()


def run_action(page: Any, changelist: str, pk: str, action: str) -> None:
    """Tick one row of a changelist and run an admin action on it."""
    page.goto(changelist)
    page.check(f"input.action-select[value='{pk}']")
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")
    page.wait_for_load_state()


def tenant(name: str = "Initech", prefix: str = "initech") -> Workspace:
    workspace = Workspace.objects.create(name=name, onboarded=True)
    OrgPrefix.objects.create(workspace=workspace, prefix=prefix)
    return workspace


def test_staff_onboard_a_tenant_with_a_prefix_an_endpoint_and_a_group_tree(
    staff_page: Any, shots: Shots, settings: Any
) -> None:
    settings.GATEWAY_UPSTREAM_ALLOWLIST = ["127.0.0.0/8"]
    page = staff_page

    page.goto("/admin/groups/workspace/add/")
    page.fill("#id_name", "Initech")
    shots("workspace-form")
    save(page)
    workspace = Workspace.objects.get(name="Initech")
    run_action(page, "/admin/groups/workspace/", workspace.pk, "onboard")
    shots("onboarded")
    page.goto(f"/admin/groups/orgprefix/add/?workspace={workspace.pk}")
    page.fill("#id_prefix", "initech")
    save(page)
    page.goto("/admin/routing/endpoint/add/")
    choose(page, "workspace", "Initech", workspace.pk)
    page.fill("#id_slug", "initech/llama")
    page.select_option("#id_targets-0-provider", "OPENAI_COMPATIBLE")
    page.fill("#id_targets-0-base_url", "http://127.0.0.1:9/v1")
    page.fill("#id_targets-0-target_model", "llama-3")
    shots("endpoint-form")
    save(page)
    shots("endpoint-saved")
    for ext_id, parent, rpm in (("initech-root", None, 100), ("initech-team", "initech-root", 10)):
        page.goto("/admin/groups/group/add/")
        choose(page, "workspace", "Initech", workspace.pk)
        page.fill("#id_external_entity_id", ext_id)
        if parent is None:
            page.select_option("#id_limit_enforcement", "CASCADING")
        else:
            page.fill("#id_parent_group_id", Group.objects.get(external_entity_id=parent).pk)
        page.fill("#id_models_json", json.dumps([model("initech/llama", rpm)]))
        save(page)
    child = Group.objects.get(external_entity_id="initech-team")
    page.goto(f"/admin/groups/group/{child.pk}/change/")
    shots("group-tree")

    workspace.refresh_from_db()
    assert workspace.onboarded
    assert OrgPrefix.objects.get(prefix="initech").workspace == workspace
    endpoint = Endpoint.objects.get(slug="initech/llama", deleted_at__isnull=True)
    assert endpoint.targets.get().target_model == "llama-3"
    assert child.parent is not None and child.parent.external_entity_id == "initech-root"
    assert child.depth == 2
    assert child.limit_enforcement == "CASCADING"
    assert (
        page.locator("fieldset", has_text="Effective limits").locator("td", has_text="10").count()
    )


def test_a_minted_key_is_shown_once_and_can_be_revoked(staff_page: Any, shots: Shots) -> None:
    workspace = tenant()
    endpoint_create(workspace=workspace, actor=SYSTEM_ACTOR, slug="initech/llama", targets=[TARGET])
    group = group_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        external_entity_id="cust",
        models=[model("initech/llama", 5)],
    )
    page = staff_page

    page.goto("/admin/keys/apikey/add/")
    choose(page, "group", "cust", group.pk)
    page.fill("#id_name", "for the browser test")
    save(page)
    plaintext = page.inner_text("#minted-key").strip()
    shots("minted")
    key = ApiKey.objects.get(group=group)
    page.click("text=Open the key")
    detail = page.content()
    shots("key-detail")
    page.goto("/admin/keys/apikey/")
    listing = page.content()
    page.goto("/admin/keys/apikey/add/")
    add_again = page.content()
    run_action(page, "/admin/keys/apikey/", key.pk, "revoke_selected")
    shots("revoke-asks-first")
    page.click("#confirm-yes")
    page.wait_for_load_state()
    shots("revoked")

    assert re.fullmatch(r"sky_[0-9A-Za-z]{12}\.[0-9A-Za-z]{32,}", plaintext)
    assert plaintext.startswith(key.prefix)
    secret_half = plaintext.split(".", 1)[1]
    assert key.prefix in detail and key.prefix in listing
    assert secret_half not in detail + listing + add_again
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert api_key_resolve(plaintext=plaintext) is None
    assert "Revoked 1 key(s)." in page.content()


def test_a_failed_delivery_is_resent(staff_page: Any, shots: Shots) -> None:
    workspace = tenant()
    hook = WebhookEndpoint.objects.create(workspace=workspace, url="http://127.0.0.1:9/hook")
    delivery = WebhookDelivery.objects.create(
        endpoint=hook,
        body=b'{"type": "API_BILLING_USAGE", "data": {"events": []}}',
        event_count=0,
        status="failed",
        attempts=10,
        last_status_code=500,
    )
    page = staff_page

    page.goto("/admin/billing/webhookdelivery/?status=failed")
    shots("failed-deliveries")
    run_action(page, "/admin/billing/webhookdelivery/", delivery.pk, "resend")
    shots("resent")

    delivery.refresh_from_db()
    assert delivery.status == "pending"
    # No Celery worker runs in this test: Resend says so instead of a blind "Queued".
    assert "NOT sent: no Celery worker has run a task ever" in page.content()


def test_the_usage_dashboard_draws_a_chart_per_slug(staff_page: Any, shots: Shots) -> None:
    workspace = tenant()
    group = Group.objects.create(workspace=workspace, external_entity_id="cust", name="Customer")
    now = timezone.now()
    # The two recent events share a UTC day (the daily chart's bucket) and not an hour: in the
    # first hours of a day they go an hour apart before its midnight.
    recent = 1 if now.hour >= 3 else now.hour + 1
    for hours, tokens in ((recent, 100), (recent + 1, 300), (30, 50)):
        UsageEvent.objects.create(
            request_id=f"req-{hours}",
            timestamp=now - timedelta(hours=hours),
            workspace=workspace,
            group=group,
            external_entity_id="cust",
            api_key_prefix="sky_browser00000",
            model_slug="initech/llama",
            status="completed",
            input_tokens=tokens,
            output_tokens=tokens,
        )
    page = staff_page

    page.goto("/admin/billing/usageevent/dashboard/")
    choose(page, "workspace", workspace.name, workspace.pk)
    page.click("input[type=submit][value=Show]")
    page.wait_for_load_state()
    shots("usage-dashboard")

    assert page.locator("h2", has_text="initech/llama").count() == 1
    assert page.locator("figure.usage-chart figcaption").all_inner_texts() == [
        "Requests, last 24 h: 2 (peak 1)",
        "Tokens, last 24 h: 800 (peak 600)",
        "Requests, last 30 days: 3 (peak 2)",
        "Tokens, last 30 days: 900 (peak 800)",
    ]
    assert page.locator("figure.usage-chart.drawn canvas").count() == 4
    drawn = page.evaluate(
        "Object.values(Chart.instances).map(c => c.data.datasets[0].data.reduce((a, b) => a + b))"
    )
    assert sorted(drawn) == [2, 3, 800, 900], "Chart.js drew each chart from the page's data"
    assert page.locator("script[src*='/static/billing/vendor/chart-']").count() == 1
    # The server-drawn SVG stays in the page for browsers without scripts, hidden here.
    assert page.locator("figure.usage-chart svg rect").count() == 24 * 2 + 30 * 2
    assert not page.locator("figure.usage-chart svg").first.is_visible()


def test_a_user_without_staff_status_cannot_log_in(
    page: Any, shots: Shots, transactional_db: None
) -> None:
    from django.contrib.auth.models import User

    User.objects.create_user("customer", password="customer-password-1", is_staff=False)

    log_in(page, "customer", "customer-password-1")
    shots("refused")
    page.goto("/admin/")

    assert "/admin/login/" in page.url
    assert page.locator("#id_username").count() == 1
