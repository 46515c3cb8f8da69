"""Access attacks: view-only staff changing things through the admin, one tenant using another's
upstream allowlist, a legacy user's id smuggled in as a parent group."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.test import Client, RequestFactory
from django.urls import URLPattern, reverse
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import WebhookDelivery, WebhookEndpoint, WebhookSecret
from billing.services.attempts import delivery_attempt_run
from billing.services.webhooks import webhook_endpoint_create
from gateway_project.kernel.encryption import encrypt
from gateway_project.kernel.errors import ValidationFailed
from groups import services as group_services
from groups.models import AuditEvent, Group, Workspace
from groups.services.audit import SYSTEM_ACTOR
from keys import services as key_services
from routing import services as routing_services
from routing.models import Endpoint
from tests.billing.scripted_server import Reply, ScriptedServer
from tests.proxy.conftest import GatewayThread, compatible_target, tenant_build

pytestmark = pytest.mark.django_db

# Admin views every ModelAdmin has; Django itself checks their permissions.
STANDARD_VIEWS = ("changelist", "add", "history", "delete", "change")
# Custom admin views that only read, so the view permission is the right one.
READ_ONLY_VIEWS = {"billing_usageevent_dashboard"}
# Actions that exist today: the walk below must find at least these.
KNOWN_ACTIONS = {
    ("groups", "workspace"): {"onboard", "offboard"},
    ("billing", "webhookendpoint"): {"rotate_secret", "rotate_secret_now", "enable", "disable"},
    ("billing", "webhookdelivery"): {"resend", "recover_failed_since"},
    ("keys", "apikey"): {"revoke_selected"},
}


def view_only_user() -> User:
    """Staff holding every view permission and nothing else."""
    user = User.objects.create_user("viewer", password="pw-123456789", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    return User.objects.get(pk=user.pk)  # a fresh instance: no cached permissions


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def action_post(client: Client, changelist: str, action: str, pks: list[str]) -> Any:
    """Tick `pks` on a changelist and run `action`, as the admin's action bar does."""
    return client.post(changelist, {"action": action, "_selected_action": pks, "index": "0"})


def webhook_endpoint(workspace: Workspace) -> WebhookEndpoint:
    endpoint, _secret = webhook_endpoint_create(
        workspace=workspace, url="http://127.0.0.1:9/hooks", actor=SYSTEM_ACTOR
    )
    return endpoint


# --- 8: a view-only staff user runs admin actions that change things ----------------------------


@pytest.mark.parametrize("action", ["rotate_secret", "rotate_secret_now"])
def test_view_only_staff_cannot_rotate_webhook_secret(
    workspace: Workspace, settings: Any, action: str
) -> None:
    settings.GATEWAY_UPSTREAM_ALLOWLIST = ["127.0.0.0/8"]
    endpoint = webhook_endpoint(workspace)
    client = client_for(view_only_user())

    response = action_post(client, "/admin/billing/webhookendpoint/", action, [endpoint.pk])

    assert response.status_code == 200  # the changelist again: no action for this user
    assert b"whsec_" not in response.content
    assert WebhookSecret.objects.filter(endpoint=endpoint).count() == 1
    assert not WebhookSecret.objects.filter(endpoint=endpoint, expires_at__isnull=False).exists()


@pytest.mark.parametrize(("action", "onboarded"), [("onboard", False), ("offboard", True)])
def test_view_only_staff_cannot_onboard_or_offboard_a_workspace(
    db: None, action: str, onboarded: bool
) -> None:
    workspace = Workspace.objects.create(name="Initech", onboarded=onboarded)
    client = client_for(view_only_user())

    response = action_post(client, "/admin/groups/workspace/", action, [workspace.pk])

    assert response.status_code == 200  # the changelist again: no action for this user
    workspace.refresh_from_db()
    assert workspace.onboarded is onboarded
    assert not AuditEvent.objects.filter(object_id=workspace.pk).exists()


def test_view_only_staff_cannot_disable_a_webhook_endpoint(
    workspace: Workspace, settings: Any
) -> None:
    settings.GATEWAY_UPSTREAM_ALLOWLIST = ["127.0.0.0/8"]
    endpoint = webhook_endpoint(workspace)
    client = client_for(view_only_user())

    response = action_post(client, "/admin/billing/webhookendpoint/", "disable", [endpoint.pk])

    assert response.status_code == 200
    endpoint.refresh_from_db()
    assert endpoint.enabled


def _request_as(user: User) -> Any:
    request = RequestFactory().get("/admin/")
    request.user = user
    return request


def test_no_admin_action_is_offered_to_view_only_staff() -> None:
    # Every registered ModelAdmin, so an action added later without `permissions=` fails here.
    viewer = view_only_user()
    superuser = User.objects.create_superuser("root", "root@example.com", "pw-123456789")
    offered: dict[tuple[str, str], set[str]] = {}
    leaked: dict[str, list[str]] = {}

    for model, model_admin in admin.site._registry.items():
        label = (model._meta.app_label, model._meta.model_name or "")
        offered[label] = set(model_admin.get_actions(_request_as(superuser)))
        viewer_actions = list(model_admin.get_actions(_request_as(viewer)))
        if viewer_actions:
            leaked[model._meta.label] = viewer_actions

    assert leaked == {}
    for label, actions in KNOWN_ACTIONS.items():
        assert actions <= offered[label], label


def _custom_views() -> list[tuple[str, str]]:
    """(url name, url) of every admin view a ModelAdmin adds beyond Django's own."""
    found = []
    for model, model_admin in admin.site._registry.items():
        prefix = f"{model._meta.app_label}_{model._meta.model_name}_"
        standard = {prefix + view for view in STANDARD_VIEWS}
        for pattern in model_admin.get_urls():
            if isinstance(pattern, URLPattern) and pattern.name and pattern.name not in standard:
                kwargs = dict.fromkeys(pattern.pattern.regex.groupindex, "1")
                found.append((pattern.name, reverse(f"admin:{pattern.name}", kwargs=kwargs)))
    return sorted(found)


def test_view_only_staff_cannot_use_custom_admin_views_that_write() -> None:
    client = client_for(view_only_user())
    views = _custom_views()
    answers = {}

    for name, url in views:
        answers[name] = (client.get(url).status_code, client.post(url, {}).status_code)

    assert "billing_webhookdelivery_recover" in answers
    for name, (get_status, post_status) in answers.items():
        if name in READ_ONLY_VIEWS:
            assert get_status == 200, name
        else:
            assert (get_status, post_status) == (403, 403), name


# --- 14: a legacy user's id as a group's parent -------------------------------------------------


MODELS = [{"slug": "acme/llama"}]


def _legacy_user(workspace: Workspace) -> Group:
    """A legacy user with access to `acme/llama` (a loopback endpoint)."""
    target = {"provider": "OPENAI_COMPATIBLE", "base_url": "http://127.0.0.1:9/v1"}
    routing_services.endpoint_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        slug="acme/llama",
        targets=[{**target, "target_model": "m"}],
    )
    user, _ = group_services.user_upsert(
        workspace=workspace, customer_id="legacy-user", models=MODELS, actor=SYSTEM_ACTOR
    )
    return user


def test_a_legacy_user_id_is_refused_as_parent_group_id_in_the_api(
    workspace: Workspace, settings: Any
) -> None:
    settings.GATEWAY_UPSTREAM_ALLOWLIST = ["127.0.0.0/8"]
    user = _legacy_user(workspace)
    _key, manage = key_services.management_key_create(workspace=workspace, actor=SYSTEM_ACTOR)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {manage}")
    body = {
        "metadata": {"external_entity_id": "under-a-user"},
        "models": MODELS,
        "hierarchy": {"parent_group_id": user.pk},
    }

    response = client.post("/v1/gateway/groups", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_parent_group"
    assert response.json()["error"]["param"] == "hierarchy.parent_group_id"
    assert not Group.objects.filter(external_entity_id="under-a-user").exists()
    assert client.get(f"/v1/gateway/groups/{user.pk}").status_code == 404


def test_a_legacy_user_id_is_refused_as_parent_group_id_in_the_admin(
    workspace: Workspace, settings: Any
) -> None:
    settings.GATEWAY_UPSTREAM_ALLOWLIST = ["127.0.0.0/8"]
    user = _legacy_user(workspace)
    superuser = User.objects.create_superuser("root", "root@example.com", "pw-123456789")
    data = {
        "workspace": workspace.pk,
        "external_entity_id": "under-a-user",
        "parent_group_id": user.pk,
        "limit_enforcement": "",
        "models_json": json.dumps(MODELS),
    }

    response = client_for(superuser).post("/admin/groups/group/add/", data)

    assert response.status_code == 200
    assert "legacy user" in response.context["adminform"].form.errors["parent_group_id"][0]
    assert not Group.objects.filter(external_entity_id="under-a-user").exists()


# --- 11: one workspace's upstream allowlist used by another -------------------------------------

LOOPBACK = ["127.0.0.0/8"]


def _allow(workspace: Workspace, entries: list[str] | None) -> None:
    group_services.workspace_set_upstream_allowlist(
        workspace=workspace, entries=entries, actor=SYSTEM_ACTOR
    )


def _manage_client(workspace: Workspace) -> APIClient:
    _key, manage = key_services.management_key_create(workspace=workspace, actor=SYSTEM_ACTOR)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {manage}")
    return client


def _target(base_url: str) -> dict[str, str]:
    return {"provider": "OPENAI_COMPATIBLE", "base_url": base_url, "target_model": "m"}


def test_workspace_b_cannot_target_workspace_a_allowed_range(
    workspace: Workspace, other_workspace: Workspace, settings: Any
) -> None:
    settings.GATEWAY_UPSTREAM_ALLOWLIST = []  # production: no gateway-wide private range
    _allow(workspace, LOOPBACK)
    private = "http://127.0.0.1:9/v1"
    client_a, client_b = _manage_client(workspace), _manage_client(other_workspace)
    public = client_b.post(
        "/v1/gateway/endpoints",
        {"slug": "globex/llama", "targets": [_target("https://8.8.8.8/v1")]},
        format="json",
    )

    created_a = client_a.post(
        "/v1/gateway/endpoints",
        {"slug": "acme/llama", "targets": [_target(private)]},
        format="json",
    )
    created_b = client_b.post(
        "/v1/gateway/endpoints",
        {"slug": "globex/vllm", "targets": [_target(private)]},
        format="json",
    )
    patched_b = client_b.patch(
        f"/v1/gateway/endpoints/{public.json()['id']}",
        {"targets": [_target(private)]},
        format="json",
    )

    assert public.status_code == 200, public.content
    assert created_a.status_code == 200, created_a.content
    for response in (created_b, patched_b):
        assert response.status_code == 400, response.content
        assert response.json()["error"]["code"] == "unsafe_url"
        assert response.json()["error"]["param"] == "targets[0].base_url"


def test_workspace_b_cannot_target_workspace_a_allowed_range_in_the_admin(
    workspace: Workspace, other_workspace: Workspace, settings: Any
) -> None:
    settings.GATEWAY_UPSTREAM_ALLOWLIST = []
    _allow(workspace, LOOPBACK)
    superuser = User.objects.create_superuser("root", "root@example.com", "pw-123456789")
    form = {
        "workspace": other_workspace.pk,
        "slug": "globex/vllm",
        "region": "UNRESTRICTED",
        "targets-TOTAL_FORMS": "1",
        "targets-INITIAL_FORMS": "0",
        "targets-MIN_NUM_FORMS": "0",
        "targets-MAX_NUM_FORMS": "4",
        "targets-0-provider": "OPENAI_COMPATIBLE",
        "targets-0-base_url": "http://127.0.0.1:9/v1",
        "targets-0-target_model": "m",
    }

    response = client_for(superuser).post("/admin/routing/endpoint/add/", form)

    assert response.status_code == 200
    errors = response.context["inline_admin_formsets"][0].formset.non_form_errors()
    assert [e.code for e in errors.as_data()] == ["unsafe_url"]
    assert not Endpoint.objects.filter(slug="globex/vllm").exists()


def test_workspace_b_cannot_point_a_webhook_at_workspace_a_allowed_range(
    workspace: Workspace, other_workspace: Workspace, settings: Any
) -> None:
    settings.GATEWAY_UPSTREAM_ALLOWLIST = []
    _allow(workspace, LOOPBACK)
    superuser = User.objects.create_superuser("root", "root@example.com", "pw-123456789")
    url = "http://127.0.0.1:9/hooks"

    webhook_endpoint(workspace)
    with pytest.raises(ValidationFailed) as refused:
        webhook_endpoint_create(workspace=other_workspace, url=url, actor=SYSTEM_ACTOR)
    response = client_for(superuser).post(
        "/admin/billing/webhookendpoint/add/", {"workspace": other_workspace.pk, "url": url}
    )

    assert refused.value.code == "unsafe_url"
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["url"]
    assert not WebhookEndpoint.objects.filter(workspace=other_workspace).exists()


def test_workspace_b_webhook_is_not_sent_into_workspace_a_allowed_range(
    workspace: Workspace, other_workspace: Workspace, settings: Any
) -> None:
    # B's endpoint predates the allowlist change (staff narrowed it): send time checks again.
    settings.GATEWAY_UPSTREAM_ALLOWLIST = LOOPBACK
    _allow(workspace, LOOPBACK)
    _allow(other_workspace, [])
    due = timezone.now()

    with ScriptedServer(Reply(204)) as server:
        deliveries = {}
        for ws in (workspace, other_workspace):
            endpoint = WebhookEndpoint.objects.create(workspace=ws, url=f"{server.url}/hook")
            WebhookSecret.objects.create(endpoint=endpoint, ciphertext=encrypt("whsec_dGVzdA=="))
            delivery = WebhookDelivery.objects.create(
                endpoint=endpoint, body=b"{}", event_count=0, next_attempt_at=due
            )
            deliveries[ws.pk] = delivery_attempt_run(delivery_id=delivery.pk, now=due)
        received = len(server.requests)

    attempt_a, attempt_b = deliveries[workspace.pk], deliveries[other_workspace.pk]
    assert attempt_a is not None and attempt_a.status_code == 204
    assert attempt_b is not None and attempt_b.status_code is None
    assert attempt_b.error.startswith("refused")
    assert received == 1


def test_workspace_b_upstream_in_workspace_a_allowed_range_is_refused_at_connect_time(
    gateway: GatewayThread,
    workspace: Workspace,
    other_workspace: Workspace,
    settings: Any,
    upstream: Any,
) -> None:
    # B's target was accepted while B was allowed there; staff then narrowed B's allowlist.
    settings.GATEWAY_UPSTREAM_ALLOWLIST = []
    _allow(workspace, LOOPBACK)
    _allow(other_workspace, LOOPBACK)
    tenant_a = tenant_build(workspace=workspace, targets=[compatible_target(upstream.url)])
    tenant_b = tenant_build(
        workspace=other_workspace, slug="globex/llama", targets=[compatible_target(upstream.url)]
    )
    _allow(other_workspace, [])
    body = {"messages": [{"role": "user", "content": "hi"}]}

    answers = {}
    for tenant, slug in ((tenant_b, "globex/llama"), (tenant_a, "acme/llama")):
        answers[slug] = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={**body, "model": slug},
            headers={"Authorization": f"Bearer {tenant.key}"},
            timeout=10,
        )

    assert answers["globex/llama"].status_code == 502
    assert answers["globex/llama"].json()["error"]["code"] == "bad_gateway"
    assert answers["acme/llama"].status_code == 200
    assert len(upstream.requests) == 1


ANSWER = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
).encode()


def test_a_cookie_one_customers_upstream_answer_sets_never_reaches_another_customers_request(
    gateway: GatewayThread, workspace: Workspace
) -> None:
    # A balancer's affinity cookie, or a session an upstream opens for whoever called it: the
    # gateway's upstream client serves every customer, so it keeps none.
    sets_cookie = Reply(
        200,
        {"content-type": "application/json", "set-cookie": "session=customer-a; Path=/"},
        ANSWER,
    )
    with ScriptedServer(sets_cookie) as upstream:
        # By name: a client's cookie jar ignores cookies from an IP address, not from a host name.
        base_url = upstream.url.removesuffix("/hook").replace("127.0.0.1", "localhost") + "/v1"
        customer_a = tenant_build(
            workspace=workspace, targets=[compatible_target(base_url)], slug="acme/a"
        )
        customer_b = tenant_build(
            workspace=workspace,
            targets=[compatible_target(base_url)],
            slug="acme/b",
            external_id="cust_b",
        )
        for tenant, slug in (
            (customer_a, "acme/a"),
            (customer_b, "acme/b"),
            (customer_a, "acme/a"),
        ):
            response = httpx.post(
                f"{gateway.url}/v1/chat/completions",
                json={"model": slug, "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {tenant.key}"},
                timeout=30,
            )
            assert response.status_code == 200, response.content
            assert "set-cookie" not in response.headers

    assert len(upstream.requests) == 3
    for request in upstream.requests:
        assert not any(name.lower() == "cookie" for name in request["headers"])
