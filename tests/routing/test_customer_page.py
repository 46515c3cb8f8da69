"""Support's customer page: found by what a ticket quotes (a whole key never echoed, stored or put
in a URL), showing keys, limits, rejections, billing and audit, linked both ways."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta
from itertools import count
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.models import UsageEvent, WebhookDelivery, WebhookEndpoint
from billing.services.batching import events_batch
from groups.models import AuditEvent, Group, Workspace
from groups.selectors import group_enforced_limits
from groups.services import group_create
from groups.services.audit import SYSTEM_ACTOR
from keys.services import api_key_create, api_key_revoke
from routing.activity import ActivityBook, Rejection, activity_flush
from routing.admission import limits_admit
from routing.customer import LimitBar, limit_bars
from routing.redis_pool import close_all, main_redis
from tests.proxy.conftest import SLUG, Tenant, compatible_target, tenant_build

SEARCH = "/admin/customers/"
LIMITS = {
    "rate_limits": [{"type": "REQUEST", "unit": "MINUTE", "threshold": 50_000}],
    "usage_limits": [{"type": "TOKEN", "unit": "DAY", "threshold": 5_000_000}],
}
_numbers = count(1)


@pytest.fixture
def tenant(workspace: Workspace) -> Tenant:
    return tenant_build(
        workspace=workspace,
        targets=[compatible_target("http://127.0.0.1:9/v1")],
        limits=LIMITS,
        external_id="cust.support-42",
    )


@pytest.fixture
def event(tenant: Tenant) -> Callable[..., UsageEvent]:
    def make(**fields: Any) -> UsageEvent:
        values: dict[str, Any] = {
            "request_id": f"req-{next(_numbers)}",
            "timestamp": timezone.now(),
            "workspace": tenant.workspace,
            "group": tenant.group,
            "external_entity_id": tenant.group.external_entity_id,
            "api_key_prefix": tenant.prefix,
            "model_slug": SLUG,
            "status": "completed",
            "input_tokens": 1_200,
            "output_tokens": 34_000,
            **fields,
        }
        return UsageEvent.objects.create(**values)

    return make


def _page(client: Client, tenant: Tenant) -> str:
    response = client.get(reverse("customer-page", args=[tenant.group.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_an_external_id_a_group_id_or_a_key_prefix_opens_the_customer_page(
    admin_client: Client, tenant: Tenant
) -> None:
    page = reverse("customer-page", args=[tenant.group.pk])

    by_external = admin_client.get(SEARCH, {"q": "cust.support-42"})
    by_group = admin_client.get(SEARCH, {"q": tenant.group.pk})
    by_prefix = admin_client.get(SEARCH, {"q": tenant.prefix})

    assert by_external.status_code == by_group.status_code == by_prefix.status_code == 302
    assert by_external["Location"] == by_group["Location"] == page
    assert by_prefix["Location"] == f"{page}?key={tenant.prefix}"


def test_a_pasted_whole_key_finds_its_customer_and_is_never_echoed_or_logged(
    admin_client: Client, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api_key_revoke(workspace=tenant.workspace, prefix=tenant.prefix, actor=SYSTEM_ACTOR)

    posted = admin_client.post(SEARCH, {"q": f"  {tenant.key} "}, follow=True)

    assert posted.redirect_chain[0] == (f"{SEARCH}?q={tenant.prefix}", 302)
    assert posted.redirect_chain[-1][0].endswith(f"?key={tenant.prefix}")
    body = posted.content.decode()
    assert tenant.prefix in body
    secret = tenant.key.split(".", 1)[1]
    assert secret not in body
    assert all(secret not in url for url, _ in posted.redirect_chain)
    assert secret not in caplog.text
    assert not AuditEvent.objects.filter(after__icontains=secret).exists()


def test_an_unknown_whole_key_is_reported_without_echoing_it(
    admin_client: Client, tenant: Tenant
) -> None:
    unknown = tenant.prefix + ".x" + "Q" * 40

    posted = admin_client.post(SEARCH, {"q": unknown}, follow=True)
    in_url = admin_client.get(SEARCH, {"q": unknown}, follow=True)

    assert "No key matches the pasted key" in posted.content.decode()
    assert "does not belong in an address" in in_url.content.decode()
    for response in (posted, in_url):
        assert "Q" * 40 not in response.content.decode()
        assert all("Q" * 40 not in url for url, _ in response.redirect_chain)


def test_an_external_id_used_by_two_workspaces_lists_both(
    admin_client: Client, tenant: Tenant, other_workspace: Workspace
) -> None:
    other = tenant_build(
        workspace=other_workspace,
        targets=[compatible_target("http://127.0.0.1:9/v1")],
        slug="globex/llama",
        external_id="cust.support-42",
    ).group

    response = admin_client.get(SEARCH, {"q": "cust.support-42"})

    body = response.content.decode()
    assert response.status_code == 200
    assert reverse("customer-page", args=[tenant.group.pk]) in body
    assert reverse("customer-page", args=[other.pk]) in body


def test_nothing_found_says_so(admin_client: Client, tenant: Tenant) -> None:
    response = admin_client.get(SEARCH, {"q": "nobody-like-this"})

    assert "No customer matches" in response.content.decode()


def test_the_page_shows_usage_against_every_limit_rejections_keys_billing_and_audit(
    admin_client: Client, tenant: Tenant, event: Callable[..., UsageEvent], settings: Any
) -> None:
    settings.GATEWAY_WEBHOOK_FLUSH_SECONDS = 0
    endpoint = WebhookEndpoint.objects.create(
        workspace=tenant.workspace, url="https://billing.example.com/hook"
    )
    billed = event()
    events_batch(now=timezone.now())
    WebhookDelivery.objects.update(status="delivered", delivered_at=timezone.now())
    waiting = event(timestamp=timezone.now() + timedelta(seconds=1))
    book = ActivityBook()
    for _ in range(3):
        book.rejection(
            Rejection(
                group_id=tenant.group.pk,
                key_prefix=tenant.prefix,
                slug=SLUG,
                limit_type="request",
                limit_unit="minute",
                threshold=50_000,
                limit_group=tenant.group.pk,
                reason="Rate limit exceeded for model 'acme/llama'.",
            ),
            now=timezone.now().timestamp(),
        )

    async def flush() -> None:
        await activity_flush(main_redis(), book)
        await close_all()

    asyncio.run(flush())

    body = _page(admin_client, tenant)

    assert "50,000 requests" in body and "5,000,000 tokens" in body
    assert "requests per minute" in body and "tokens today (UTC)" in body
    assert "REQUEST MINUTE &le; 50,000" in body
    assert '<td class="n count">3</td>' in body
    assert tenant.prefix in body and "70,400" in body  # 2 events x 35,200 tokens this month
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert reverse("admin:billing_webhookdelivery_change", args=[delivery.pk]) in body
    assert reverse("admin:billing_usageevent_change", args=[billed.pk]) in body
    assert reverse("admin:billing_usageevent_change", args=[waiting.pk]) in body
    assert "waiting for batching" in body
    assert "api_key.create" in body and "group.create" in body
    assert " UTC" in body and "p.m." not in body and "a.m." not in body


def test_every_related_admin_page_links_to_the_customer_page(
    admin_client: Client, tenant: Tenant, event: Callable[..., UsageEvent], settings: Any
) -> None:
    settings.GATEWAY_WEBHOOK_FLUSH_SECONDS = 0
    WebhookEndpoint.objects.create(workspace=tenant.workspace, url="https://billing.example.com/h")
    usage = event()
    events_batch(now=timezone.now())
    delivery = WebhookDelivery.objects.get()
    key = tenant.group.api_keys.get()
    audit = AuditEvent.objects.get(object_type="api_key", object_id=key.pk)
    page = reverse("customer-page", args=[tenant.group.pk])
    related = {
        "admin:groups_group_change": ("group", tenant.group.pk),
        "admin:keys_apikey_change": ("apikey", key.pk),
        "admin:billing_usageevent_change": ("usageevent", usage.pk),
        "admin:billing_webhookdelivery_change": ("webhookdelivery", delivery.pk),
        "admin:groups_auditevent_change": ("auditevent", audit.pk),
    }

    for name, (model, pk) in related.items():
        change = admin_client.get(reverse(name, args=[pk]))
        link = reverse("customer-of", args=[model, pk])
        assert link in change.content.decode(), name
        assert admin_client.get(link)["Location"] == page, name
    body = _page(admin_client, tenant)
    assert reverse("admin:groups_group_change", args=[tenant.group.pk]) in body
    assert reverse("admin:keys_apikey_change", args=[key.pk]) in body
    assert reverse("admin:groups_auditevent_change", args=[audit.pk]) in body


def test_a_child_group_page_links_up_its_chain(admin_client: Client, tenant: Tenant) -> None:
    child = group_create(
        workspace=tenant.workspace,
        actor=SYSTEM_ACTOR,
        external_entity_id="team-1",
        parent_group_id=tenant.group.pk,
        models=[{"slug": SLUG}],
    )

    response = admin_client.get(reverse("customer-page", args=[child.pk]))

    assert reverse("customer-page", args=[tenant.group.pk]) in response.content.decode()


def test_the_pages_need_a_staff_login_with_view_access_to_everything_they_show(
    client: Client, tenant: Tenant
) -> None:
    page = reverse("customer-page", args=[tenant.group.pk])
    assert client.get(page)["Location"].startswith("/admin/login/")
    user = User.objects.create_user("helpdesk", password="pw-123456789", is_staff=True)
    client.force_login(user)

    refused = client.get(page)
    for app_label, model in (("groups", "group"), ("groups", "auditevent"), ("keys", "apikey")):
        user.user_permissions.add(
            Permission.objects.get(codename=f"view_{model}", content_type__app_label=app_label)
        )
    short_of_billing = client.get(page)
    for model in ("usageevent", "webhookdelivery"):
        user.user_permissions.add(
            Permission.objects.get(codename=f"view_{model}", content_type__app_label="billing")
        )
    user = User.objects.get(pk=user.pk)  # permissions are cached on the instance
    client.force_login(user)
    allowed = client.get(page)

    assert refused.status_code == short_of_billing.status_code == 403
    assert allowed.status_code == 200


def test_an_unknown_customer_or_object_kind_is_a_404(admin_client: Client, tenant: Tenant) -> None:
    assert admin_client.get(reverse("customer-page", args=["grp_nope"])).status_code == 404
    assert admin_client.get(reverse("customer-of", args=["secret", "x"])).status_code == 404


def test_the_usage_dashboard_takes_an_external_id(
    admin_client: Client, tenant: Tenant, event: Callable[..., UsageEvent]
) -> None:
    event()
    url = reverse("admin:billing_usageevent_dashboard")

    found = admin_client.get(url, {"workspace": tenant.workspace.pk, "group": "cust.support-42"})
    unknown = admin_client.get(url, {"workspace": tenant.workspace.pk, "group": "nobody"})

    assert SLUG in found.content.decode()
    assert "No usage" not in found.content.decode()
    assert "No group with the id or external id" in unknown.content.decode()


def test_audit_search_finds_a_key_prefix_and_an_external_id(
    admin_client: Client, tenant: Tenant, other_workspace: Workspace
) -> None:
    key = tenant.group.api_keys.get()
    other = tenant_build(
        workspace=other_workspace,
        targets=[compatible_target("http://127.0.0.1:9/v1")],
        slug="globex/llama",
        external_id="globex-cust",
    )
    url = reverse("admin:groups_auditevent_changelist")

    by_prefix = admin_client.get(url, {"q": tenant.prefix}).content.decode()
    by_external = admin_client.get(url, {"q": "cust.support-42"}).content.decode()

    assert key.pk in by_prefix
    assert tenant.group.pk in by_external and key.pk in by_external
    assert other.group.pk not in by_external and other.group.pk not in by_prefix


def test_a_deleted_group_still_has_a_page(admin_client: Client, tenant: Tenant) -> None:
    Group.objects.filter(pk=tenant.group.pk).update(deleted_at=timezone.now())

    body = _page(admin_client, tenant)

    assert "deleted" in body


def test_a_key_of_another_group_is_not_shown(
    admin_client: Client, tenant: Tenant, workspace: Workspace
) -> None:
    sibling = group_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        external_entity_id="sibling",
        models=[{"slug": SLUG}],
    )
    other_key, _ = api_key_create(workspace=workspace, group=sibling, actor=SYSTEM_ACTOR)

    assert other_key.prefix not in _page(admin_client, tenant)


def test_a_bar_reads_any_limit_type_and_unit() -> None:
    spend = LimitBar("acme/llama", "SPEND", "MONTH", 0, None, None)
    tokens = LimitBar("acme/llama", "TOKEN", "DAY", 1_000, 250, "2026-12-04T00:00:00Z")

    assert (spend.measure, spend.window, spend.percent, spend.rate) == (
        "spend",
        "this month (UTC)",
        0,
        False,
    )
    assert (tokens.measure, tokens.window, tokens.percent) == ("tokens", "today (UTC)", 25)
    assert (
        tokens.resets_at is not None and tokens.resets_at.isoformat() == "2026-12-04T00:00:00+00:00"
    )
    assert LimitBar("s", "REQUEST", "MINUTE", 0, 0, None).percent == 100


def test_the_bars_show_what_the_counters_hold(other_workspace: Workspace) -> None:
    limits = {
        "rate_limits": [{"type": "REQUEST", "unit": "MINUTE", "threshold": 10}],
        "usage_limits": [{"type": "TOKEN", "unit": "DAY", "threshold": 5_000_000}],
    }
    group = tenant_build(
        workspace=other_workspace,
        targets=[compatible_target("http://127.0.0.1:9/v1")],
        slug="globex/llama",
        limits=limits,
    ).group
    enforced = group_enforced_limits(group=group)["globex/llama"]

    async def admit() -> None:
        for _ in range(7):
            admission = await limits_admit(
                limits=enforced, reserve_tokens=1_000, slug="globex/llama"
            )
            assert admission.allowed
        await close_all()

    asyncio.run(admit())

    bars = {(bar.type, bar.unit): bar for bar in limit_bars(group=group)}
    # GCRA refills one request every 6 s: the 7 just admitted are still in use.
    assert bars["REQUEST", "MINUTE"].used == 7
    assert bars["REQUEST", "MINUTE"].threshold == 10
    assert bars["TOKEN", "DAY"].used == 7_000
    assert bars["TOKEN", "DAY"].threshold == 5_000_000


def test_the_page_costs_the_same_queries_for_one_key_or_many(
    admin_client: Client,
    tenant: Tenant,
    event: Callable[..., UsageEvent],
    settings: Any,
    django_assert_max_num_queries: Any,
) -> None:
    settings.GATEWAY_WEBHOOK_FLUSH_SECONDS = 0
    WebhookEndpoint.objects.create(workspace=tenant.workspace, url="https://billing.example.com/h")
    event()
    events_batch(now=timezone.now())
    admin_client.get(reverse("customer-page", args=[tenant.group.pk]))  # session, content types
    with django_assert_max_num_queries(19) as few:  # session and user included
        _page(admin_client, tenant)
    for _ in range(5):
        api_key_create(workspace=tenant.workspace, group=tenant.group, actor=SYSTEM_ACTOR)
        event()
    events_batch(now=timezone.now())

    with django_assert_max_num_queries(100) as many:
        _page(admin_client, tenant)

    assert len(many.captured_queries) == len(few.captured_queries)


def test_a_delivery_carrying_two_customers_lists_both(
    admin_client: Client, tenant: Tenant, event: Callable[..., UsageEvent], settings: Any
) -> None:
    settings.GATEWAY_WEBHOOK_FLUSH_SECONDS = 0
    WebhookEndpoint.objects.create(workspace=tenant.workspace, url="https://billing.example.com/h")
    sibling = group_create(
        workspace=tenant.workspace,
        actor=SYSTEM_ACTOR,
        external_entity_id="sibling",
        models=[{"slug": SLUG}],
    )
    event()
    event(group=sibling, external_entity_id="sibling")
    events_batch(now=timezone.now())
    delivery = WebhookDelivery.objects.get()

    response = admin_client.get(reverse("customer-of", args=["webhookdelivery", delivery.pk]))

    body = response.content.decode()
    assert response.status_code == 200
    assert reverse("customer-page", args=[tenant.group.pk]) in body
    assert reverse("customer-page", args=[sibling.pk]) in body
