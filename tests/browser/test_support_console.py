"""The support console in headless Chromium at 1400x900, as a support engineer uses it: every
admin page fits the window and shows times with their zone; the billing banner appears when the
pipeline stalls for real; a leaked key is rotated (a reload repeats nothing); destructive actions
ask first. Screenshots under var/test-artifacts/browser/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

import pytest
from django.utils import timezone

from billing.liveness import BEAT, heartbeat_note
from billing.models import DeliveryAttempt, UsageEvent, WebhookDelivery
from billing.services.webhooks import webhook_endpoint_create
from billing.tasks import deliveries_enqueue_due, heartbeat
from groups.models import AuditEvent, OrgPrefix, Secret, Workspace
from groups.services import group_create
from groups.services.audit import SYSTEM_ACTOR
from keys.models import ApiKey
from keys.selectors import api_key_resolve
from keys.services import api_key_create, management_key_create
from routing.services import endpoint_create
from tests.browser.conftest import STAFF, Shots, log_in

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 1400, 900
# A time of day on the page; each must have seconds and be followed by its zone.
CLOCK = re.compile(r"(?<![\d:.])\d{1,2}:\d{2}(?::\d{2})?(?:\.\d+)?(?![\d:])")
ZONE_AFTER = re.compile(r" ?(?:UTC\b|Z\b|[+-]\d{2}:?\d{2})")
LOCALE_TIME = re.compile(r"\b\d{1,2}(?::\d{2})? ?[ap]\.m\.|\b(?:noon|midnight)\b", re.I)
OVERFLOW_JS = """() => {
    const root = document.documentElement;
    const found = [];
    if (root.scrollWidth > root.clientWidth + 1) found.push(`page ${root.scrollWidth}px`);
    for (const el of document.querySelectorAll('body *')) {
        const style = getComputedStyle(el);
        if (!['auto', 'scroll', 'hidden'].includes(style.overflowX)) continue;
        if (el.closest('.visually-hidden') || el.clientWidth < 20) continue;  // screen-reader text
        if (['SELECT', 'BUTTON', 'INPUT', 'TEXTAREA', 'OPTION'].includes(el.tagName)) continue;
        if (el.scrollWidth > el.clientWidth + 1)
            found.push(`${el.tagName.toLowerCase()}#${el.id}.${el.className} ` +
                       `${el.scrollWidth}px in ${el.clientWidth}px`);
    }
    return found;
}"""


@pytest.fixture
def console(browser: Any, live_server: Any, staff_user: Any) -> Iterator[Any]:
    """A logged-in support engineer's tab at 1400x900."""
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": WIDTH, "height": HEIGHT}
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    log_in(page, *STAFF)
    page.wait_for_url("**/admin/")
    yield page
    context.close()


@pytest.fixture
def console_shots(console: Any, request: pytest.FixtureRequest) -> Shots:
    return Shots(console, request.node.name)


def _alive() -> None:
    """Beat and a worker have been heard from (the worker's note through Celery's own run)."""
    heartbeat_note(role=BEAT)
    heartbeat.apply()


def _tenant(settings: Any) -> dict[str, Any]:
    """A tenant with something on every admin page: endpoint, groups, keys, usage, deliveries."""
    settings.GATEWAY_UPSTREAM_ALLOWLIST = ["127.0.0.0/8"]
    workspace = Workspace.objects.create(name="Initech Artificial Intelligence", onboarded=True)
    OrgPrefix.objects.create(workspace=workspace, prefix="initech")
    Secret.objects.create(workspace=workspace, name="openai-prod", ciphertext=b"x")
    endpoint_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        slug="initech/llama-3.1-405b-instruct-turbo",
        targets=[
            {
                "provider": "OPENAI_COMPATIBLE",
                "base_url": "http://127.0.0.1:9/v1/a/rather/long/path/to/the/upstream",
                "target_model": "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo",
            }
        ],
    )
    limits = {
        "slug": "initech/llama-3.1-405b-instruct-turbo",
        "rate_limits": [{"type": "TOKEN", "unit": "MINUTE", "threshold": 50_000_000}],
        "usage_limits": [{"type": "REQUEST", "unit": "DAY", "threshold": 1_000_000}],
    }
    root = group_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        external_entity_id="initech-enterprise-root-account",
        models=[limits],
        limit_enforcement="CASCADING",
    )
    group = group_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        external_entity_id="initech-team-with-a-long-external-identifier",
        models=[limits],
        parent_group_id=root.pk,
    )
    key, _ = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR, name="prod")
    management_key_create(workspace=workspace, actor=SYSTEM_ACTOR, name="ops automation")
    hook, _ = webhook_endpoint_create(
        workspace=workspace,
        url="http://127.0.0.1:9/billing/webhooks/receiver/with/a/long/path",
        actor=SYSTEM_ACTOR,
    )
    now = timezone.now()
    UsageEvent.objects.create(
        request_id="req-browser-1",
        timestamp=now - timedelta(minutes=3),
        workspace=workspace,
        group=group,
        external_entity_id=group.external_entity_id,
        api_key_prefix=key.prefix,
        model_slug="initech/llama-3.1-405b-instruct-turbo",
        status="completed",
        input_tokens=123_456,
        output_tokens=7_890,
        total_ms=5283.5389997198945,
        upstream_ms=5100.25,
        batched_at=now,
    )
    delivery = WebhookDelivery.objects.create(
        endpoint=hook,
        body=b'{"type": "API_BILLING_USAGE", "data": {"events": []}}',
        event_count=1,
        status="failed",
        attempts=1,
        last_status_code=500,
        last_error="HTTP 500 from the receiver",
    )
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=1,
        started_at=now,
        duration_ms=272.140266,
        status_code=500,
        response_body='{"ok": false}',
    )
    return {"workspace": workspace, "group": group, "key": key}


def _problems(page: Any) -> list[str]:
    """What is wrong with the page on screen: horizontal overflow, times without zone or seconds."""
    found = [f"overflow: {item}" for item in page.evaluate(OVERFLOW_JS)]
    text = page.inner_text("body")
    for clock in CLOCK.finditer(text):
        seconds = clock.group(0).count(":") == 2
        if not seconds or not ZONE_AFTER.match(text, clock.end()):
            found.append(f"time: {text[max(0, clock.start() - 12) : clock.end() + 6]!r}")
    found += [f"locale time: {m.group(0)!r}" for m in LOCALE_TIME.finditer(text)]
    return found


def _admin_links(page: Any, selector: str) -> list[str]:
    hrefs = page.eval_on_selector_all(selector, "els => els.map(e => e.getAttribute('href'))")
    return [h for h in dict.fromkeys(hrefs) if h and h.startswith("/admin/")]


def test_no_admin_page_overflows_1400px_or_shows_a_time_without_its_zone(
    console: Any, console_shots: Shots, settings: Any
) -> None:
    _tenant(settings)
    _alive()
    page = console
    page.goto("/admin/")
    changelists = _admin_links(page, "#content-main .app-list a, #content-main table a")
    changelists = [u for u in changelists if not u.endswith("/add/")]
    visited: dict[str, list[str]] = {}

    for changelist in changelists:
        page.goto(changelist)
        visited[changelist] = _problems(page)
        rows = _admin_links(page, "#result_list tbody tr a")[:1]
        adds = _admin_links(page, ".object-tools a.addlink")[:1]
        for url in rows + adds:
            page.goto(url)
            visited[urlparse(page.url).path] = _problems(page)
    for extra in ("/admin/", "/admin/billing-health/", "/admin/billing/usageevent/dashboard/"):
        page.goto(extra)
        visited[extra] = _problems(page)
    page.goto("/admin/groups/group/")
    page.click("#result_list tbody tr a >> nth=0")
    page.click("#edit-limits")
    limits_rows = page.locator("tr.limit-row").count()
    visited[urlparse(page.url).path] = _problems(page)
    console_shots("limits-rows")
    page.goto("/admin/routing/endpoint/")
    page.click("#result_list tbody tr a >> nth=0")
    console_shots("endpoint-targets")
    target_row_ends = [
        page.locator(f"#id_targets-0-{name}").bounding_box()
        for name in ("target_model", "secret", "DELETE")
    ]

    bad = {url: problems for url, problems in visited.items() if problems}
    (console_shots.folder / "problems.txt").write_text(
        "\n".join(f"{url}: {problems}" for url, problems in sorted(bad.items()))
    )
    assert len(visited) >= 25, sorted(visited)
    assert bad == {}
    assert all(box is not None and box["x"] + box["width"] <= WIDTH for box in target_row_ends)
    assert limits_rows == 2 + 3  # the group's two limits, then three empty rows


def test_the_banner_shows_on_every_admin_page_when_the_enqueue_task_fails(
    console: Any, console_shots: Shots, settings: Any
) -> None:
    tenant = _tenant(settings)
    _alive()
    UsageEvent.objects.create(
        request_id="req-unbatched",
        timestamp=timezone.now(),
        workspace=tenant["workspace"],
        group=tenant["group"],
        external_entity_id=tenant["group"].external_entity_id,
        api_key_prefix=tenant["key"].prefix,
        model_slug="initech/llama-3.1-405b-instruct-turbo",
        status="completed",
        input_tokens=1,
    )
    page = console
    page.goto("/admin/")
    healthy = page.locator("#billing-banner").count()
    console_shots("healthy")

    settings.GATEWAY_WEBHOOK_BATCH_SIZE = 0  # a broken deploy: the beat's batching crashes
    deliveries_enqueue_due.apply()
    seen = {}
    for url in ("/admin/", "/admin/keys/apikey/", "/admin/billing/webhookdelivery/"):
        page.goto(url)
        seen[url] = page.inner_text("#billing-banner")
    console_shots("stalled-banner")
    page.click("#billing-banner >> text=Billing health")
    console_shots("billing-health")
    health = page.inner_text("#pipeline-health")

    assert healthy == 0
    for text in seen.values():
        assert "Billing needs attention" in text
        assert "batching usage events into deliveries" in text and "ZeroDivisionError" in text
    assert re.search(r"batching usage events into deliveries\s+RED\s+failing since", health)


def test_a_leaked_key_is_rotated_and_a_reload_repeats_nothing(
    console: Any, console_shots: Shots, settings: Any
) -> None:
    tenant = _tenant(settings)
    old: ApiKey = tenant["key"]
    page = console

    page.goto(f"/admin/keys/apikey/{old.pk}/change/")
    assert page.locator("input[name=_save]").count() == 0
    page.click("#rotate-link")
    console_shots("rotate-form")
    page.check("input[name=revoke][value=now]")
    page.click("#rotate-submit")
    page.wait_for_selector("#minted-key")
    plaintext = page.inner_text("#minted-key").strip()
    console_shots("replacement-shown-once")
    page.reload()
    reloaded = page.content()
    console_shots("reloaded")

    new = api_key_resolve(plaintext=plaintext)
    assert new is not None and new.group_id == tenant["group"].pk
    old.refresh_from_db()
    assert old.revoked_at is not None
    assert plaintext not in reloaded and page.locator("#already-shown").count() == 1
    assert ApiKey.objects.filter(group=tenant["group"]).count() == 2
    assert AuditEvent.objects.filter(action="api_key.rotate", object_id=old.pk).count() == 1


def test_revoke_and_rotating_a_webhook_secret_ask_first(
    console: Any, console_shots: Shots, settings: Any
) -> None:
    tenant = _tenant(settings)
    key: ApiKey = tenant["key"]
    hook = tenant["workspace"].webhook_endpoints.get()
    page = console

    page.goto("/admin/keys/apikey/")
    page.check(f"input.action-select[value='{key.pk}']")
    page.select_option("select[name=action]", "revoke_selected")
    page.click("button[name=index]")
    page.wait_for_selector("#confirm-consequence")
    console_shots("revoke-confirmation")
    asked_live = ApiKey.objects.get(pk=key.pk).revoked_at is None
    page.click("#confirm-yes")
    page.wait_for_load_state()
    console_shots("revoked")
    page.goto("/admin/billing/webhookendpoint/")
    page.check(f"input.action-select[value='{hook.pk}']")
    page.select_option("select[name=action]", "rotate_secret_now")
    page.click("button[name=index]")
    page.wait_for_selector("#confirm-consequence")
    secrets_before = hook.secrets.count()
    page.click("#confirm-yes")
    page.wait_for_selector("code.webhook-secret")
    console_shots("secret-shown-once")
    page.reload()
    console_shots("secret-reloaded")

    assert asked_live
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
    assert secrets_before == 1 and hook.secrets.count() == 2
    assert page.locator("code.webhook-secret").count() == 0
    assert page.locator("#already-shown").count() == 1
