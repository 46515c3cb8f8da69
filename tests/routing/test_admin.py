"""Staff admin for endpoints: writes go through the services, their errors show on the form."""

from __future__ import annotations

from typing import Any

from django.test import Client
from django.urls import reverse

from groups.models import AuditEvent, Secret, Workspace
from groups.services.audit import SYSTEM_ACTOR
from routing.models import Endpoint, Target
from routing.selectors import endpoint_targets
from routing.services import endpoint_create
from tests.routing.conftest import compat

PREFIX = "targets"


def inline(
    rows: list[dict[str, Any]], *, initial: int = 0, ids: list[int] | None = None
) -> dict[str, Any]:
    """The POST fields of the Target inline formset."""
    data: dict[str, Any] = {
        f"{PREFIX}-TOTAL_FORMS": str(len(rows)),
        f"{PREFIX}-INITIAL_FORMS": str(initial),
        f"{PREFIX}-MIN_NUM_FORMS": "0",
        f"{PREFIX}-MAX_NUM_FORMS": "4",
    }
    for index, row in enumerate(rows):
        for name in (
            "provider",
            "model_id",
            "environment_name",
            "base_url",
            "target_model",
            "secret",
        ):
            data[f"{PREFIX}-{index}-{name}"] = row.get(name, "")
        if "weight" in row:
            data[f"{PREFIX}-{index}-weight"] = row["weight"]
        if ids and index < len(ids):
            data[f"{PREFIX}-{index}-id"] = str(ids[index])
            data[f"{PREFIX}-{index}-endpoint"] = ""
        if row.get("DELETE"):
            data[f"{PREFIX}-{index}-DELETE"] = "on"
    return data


COMPAT_ROW = {
    "provider": "OPENAI_COMPATIBLE",
    "base_url": "http://127.0.0.1:8000/v1",
    "target_model": "m",
}


def test_endpoint_pages_render(admin_client: Client, workspace: Workspace) -> None:
    endpoint = endpoint_create(
        workspace=workspace, actor=SYSTEM_ACTOR, slug="acme/llama", targets=[compat()]
    )

    for url, params in [
        (reverse("admin:routing_endpoint_changelist"), {"q": "llama"}),
        (reverse("admin:routing_endpoint_changelist"), {"state": "deleted", "region": "EU"}),
        (reverse("admin:routing_endpoint_change", args=[endpoint.pk]), {}),
        (reverse("admin:routing_endpoint_add"), {}),
    ]:
        assert admin_client.get(url, params).status_code == 200


def test_adding_an_endpoint_goes_through_the_service(
    admin_client: Client, workspace: Workspace, secret: Secret
) -> None:
    rows = [COMPAT_ROW, {"provider": "OPENAI", "target_model": "gpt-4o", "secret": secret.id}]
    data = {"workspace": workspace.id, "slug": "acme/llama", "region": "EU", **inline(rows)}

    response = admin_client.post(reverse("admin:routing_endpoint_add"), data)

    assert response.status_code == 302, response.content.decode()[-3000:]
    endpoint = Endpoint.objects.get(slug="acme/llama")
    assert endpoint.region == "EU"
    assert [t["provider"] for t in endpoint_targets(endpoint=endpoint)] == [
        "OPENAI_COMPATIBLE",
        "OPENAI",
    ]
    event = AuditEvent.objects.get(object_id=endpoint.id)
    assert (event.action, event.actor) == ("endpoint.create", "staff:admin")


def test_service_errors_show_on_the_form_and_nothing_is_written(
    admin_client: Client, workspace: Workspace
) -> None:
    bad_rows = [{**COMPAT_ROW, "model_id": "not-for-compat"}]
    data = {
        "workspace": workspace.id,
        "slug": "globex/llama",
        "region": "UNRESTRICTED",
        **inline(bad_rows),
    }

    response = admin_client.post(reverse("admin:routing_endpoint_add"), data)

    assert response.status_code == 200
    assert "slug: The org prefix" in response.content.decode()
    data["slug"] = "acme/llama"
    response = admin_client.post(reverse("admin:routing_endpoint_add"), data)
    assert "targets[0].model_id" in response.content.decode()
    assert not Endpoint.objects.exists() and not AuditEvent.objects.exists()


def test_editing_renames_and_replaces_targets(
    admin_client: Client, workspace: Workspace, default_baseten_secret: Secret
) -> None:
    endpoint = endpoint_create(
        workspace=workspace, actor=SYSTEM_ACTOR, slug="acme/llama", targets=[compat()]
    )
    existing = list(Target.objects.filter(endpoint=endpoint).values_list("id", flat=True))
    rows: list[dict[str, Any]] = [
        {**COMPAT_ROW, "DELETE": True},
        {"provider": "BASETEN", "model_id": "abcd1234"},
    ]
    data = {"slug": "acme/llama-v2", **inline(rows, initial=1, ids=existing)}
    data[f"{PREFIX}-0-endpoint"] = endpoint.id
    data[f"{PREFIX}-1-endpoint"] = endpoint.id

    response = admin_client.post(reverse("admin:routing_endpoint_change", args=[endpoint.pk]), data)

    assert response.status_code == 302, response.content.decode()[-3000:]
    endpoint.refresh_from_db()
    assert endpoint.slug == "acme/llama-v2"
    assert endpoint_targets(endpoint=endpoint) == [
        {
            "provider": "BASETEN",
            "model_id": "abcd1234",
            "environment_name": "production",
            "secret_id": None,
            "weight": 1,
        }
    ]
    assert (
        AuditEvent.objects.get(object_id=endpoint.id, action="endpoint.update").actor
        == "staff:admin"
    )


def test_removing_every_target_is_refused(admin_client: Client, workspace: Workspace) -> None:
    endpoint = endpoint_create(
        workspace=workspace, actor=SYSTEM_ACTOR, slug="acme/llama", targets=[compat()]
    )
    existing = list(Target.objects.filter(endpoint=endpoint).values_list("id", flat=True))
    data = {
        "slug": "acme/llama",
        **inline([{**COMPAT_ROW, "DELETE": True}], initial=1, ids=existing),
    }
    data[f"{PREFIX}-0-endpoint"] = endpoint.id

    response = admin_client.post(reverse("admin:routing_endpoint_change", args=[endpoint.pk]), data)

    assert response.status_code == 200
    assert "At least one target is required." in response.content.decode()
    assert Target.objects.filter(endpoint=endpoint).count() == 1


def test_deleting_in_the_admin_soft_deletes(admin_client: Client, workspace: Workspace) -> None:
    endpoint = endpoint_create(
        workspace=workspace, actor=SYSTEM_ACTOR, slug="acme/llama", targets=[compat()]
    )

    response = admin_client.post(
        reverse("admin:routing_endpoint_delete", args=[endpoint.pk]), {"post": "yes"}
    )

    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.deleted_at is not None and Target.objects.filter(endpoint=endpoint).exists()
    assert (
        AuditEvent.objects.get(object_id=endpoint.id, action="endpoint.delete").actor
        == "staff:admin"
    )
    assert (
        admin_client.get(reverse("admin:routing_endpoint_change", args=[endpoint.pk])).status_code
        == 200
    )


def test_the_endpoint_page_shows_each_targets_circuit_breaker(
    admin_client: Client, workspace: Workspace
) -> None:
    import asyncio

    from routing.circuit import circuit_failure
    from routing.redis_pool import close_all
    from routing.selectors import endpoint_route

    endpoint = endpoint_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        slug="acme/llama",
        targets=[compat(), compat(target_model="b")],
    )
    route = endpoint_route(slug="acme/llama")
    assert route is not None

    async def fail_five_times() -> None:
        for _ in range(5):
            await circuit_failure(route.targets[1], slug=route.slug)
        await close_all()

    asyncio.run(fail_five_times())
    page = admin_client.get(reverse("admin:routing_endpoint_change", args=[endpoint.pk]))

    text = page.content.decode()
    assert "#0 OPENAI_COMPATIBLE: closed" in text
    assert "#1 OPENAI_COMPATIBLE: open for" in text


def test_the_admin_sets_the_strategy_and_weights(
    admin_client: Client, workspace: Workspace
) -> None:
    rows = [{**COMPAT_ROW, "weight": "3"}, {**COMPAT_ROW, "target_model": "b"}]
    data = {
        "workspace": workspace.id,
        "slug": "acme/llama",
        "region": "UNRESTRICTED",
        "strategy": "WEIGHTED",
        **inline(rows),
    }

    response = admin_client.post(reverse("admin:routing_endpoint_add"), data)

    assert response.status_code == 302, response.content.decode()[-3000:]
    endpoint = Endpoint.objects.get(slug="acme/llama")
    assert endpoint.strategy == "WEIGHTED"
    assert [t["weight"] for t in endpoint_targets(endpoint=endpoint)] == [3, 1]
