"""Tenant isolation over every management route (enumerated from the URL resolver): workspace A's
key on workspace B's objects is a 404 that carries none of B's data, and changes nothing."""

from __future__ import annotations

import base64
import json
import secrets
import string
from typing import Any

import pytest
from rest_framework.test import APIClient

from groups.models import Group
from keys.models import ApiKey
from routing.models import Endpoint
from tests.security.conftest import World, model
from tests.security.routes import COLLECTION_READS, ROUTES, SCOPED, Route, api_views

pytestmark = pytest.mark.django_db

# A body that would succeed on the caller's own object, by URL name and method: the lookup, not
# validation, is what must refuse another tenant's object. Routes not listed send `{}`.
VALID_BODIES: dict[tuple[str | None, str], dict[str, Any]] = {
    ("endpoint", "patch"): {
        "targets": [
            {
                "provider": "OPENAI_COMPATIBLE",
                "base_url": "http://127.0.0.1:9/v1",
                "target_model": "x",
            }
        ]
    },
    ("group", "patch"): {"metadata": {"name": "renamed by another tenant"}},
    ("group-keys", "post"): {"name": "minted by another tenant"},
    ("user-keys", "post"): {"name": "minted by another tenant"},
}
LIST_QUERIES = {"events": {"start_time": "2000-01-01T00:00:00Z"}}


def path_values(route: Route, world: World) -> dict[str, str]:
    """The world's objects as this route's path parameters."""
    users = route.template.startswith("/v1/gateway/users")
    return {
        **world.ids,
        "owner_id": world.ids["user_id" if users else "group_id"],
        "prefix": world.ids["user_key" if users else "group_key"],
    }


def registration_body(world: World) -> tuple[bytes, str]:
    """A well-formed key registration body signed by `world`'s workspace key."""
    alphabet = string.ascii_letters + string.digits
    key = "reg_x." + "".join(secrets.choice(alphabet) for _ in range(44))
    body = json.dumps({"key": key, "name": "registered by another tenant"}).encode()
    return body, base64.b64encode(world.signing_key.sign(body)).decode()


def send(client: APIClient, route: Route, path: str, caller: World) -> Any:
    """Call `route` at `path` as `caller` with a body valid for the caller's own objects."""
    if route.method in ("get", "delete"):
        return getattr(client, route.method)(path, LIST_QUERIES.get(route.name or "", {}))
    if route.name == "group-keys-register":
        raw, signature = registration_body(caller)
        return client.post(path, raw, content_type="application/json", HTTP_X_SIGNATURE=signature)
    body = VALID_BODIES.get((route.name, route.method), {})
    return getattr(client, route.method)(path, body, format="json")


def leaked(response: Any, victim: World, *, sent: str = "") -> set[str]:
    """The victim's identifiers in a response body, beyond those the caller sent (echoing a
    caller's own input back in an error message reveals nothing)."""
    text = response.content.decode(errors="replace")
    return {value for value in victim.identifiers() if value in text and value not in sent}


def snapshot(world: World) -> dict[str, Any]:
    """What a foreign write could change: live objects, names, keys."""
    ws = world.workspace
    return {
        "groups": sorted(
            Group.objects.filter(workspace=ws).values_list("id", "name", "deleted_at")
        ),
        "keys": sorted(
            ApiKey.objects.filter(workspace=ws).values_list("prefix", "revoked_at", "name")
        ),
        "endpoints": sorted(
            Endpoint.objects.filter(workspace=ws).values_list("id", "slug", "deleted_at")
        ),
        "targets": sorted(
            Endpoint.objects.filter(workspace=ws).values_list("targets__base_url", flat=True)
        ),
    }


def test_the_management_api_has_the_routes_the_spec_lists() -> None:
    served = {str(route) for route in ROUTES}

    assert len(ROUTES) >= 24, served
    assert "DELETE /v1/gateway/groups/<gwid:owner_id>/api_keys/<keyprefix:prefix>" in served
    assert "GET /v1/gateway/events" in served


def test_every_route_under_v1_gateway_is_an_authenticated_api_view() -> None:
    from gateway_project.kernel.apikit import GatewayAPIView
    from tests.security.routes import PUBLIC_DOCUMENTS

    strays = [
        template
        for template, _pattern, view in api_views()
        if template not in PUBLIC_DOCUMENTS
        and not (view is not None and issubclass(view, GatewayAPIView))
    ]

    assert strays == []


@pytest.mark.parametrize("route", SCOPED, ids=str)
def test_another_tenants_object_is_404_and_untouched(
    route: Route, world_a: World, world_b: World
) -> None:
    before = snapshot(world_b)

    path = route.path(path_values(route, world_b))

    response = send(world_a.client(), route, path, world_a)

    assert response.status_code == 404, (route, response.content)
    assert set(response.json()) == {"error"}
    assert leaked(response, world_b, sent=path) == set()
    assert snapshot(world_b) == before


@pytest.mark.parametrize("route", [r for r in SCOPED if len(r.params) > 1], ids=str)
def test_an_own_parent_with_another_tenants_child_is_404(
    route: Route, world_a: World, world_b: World
) -> None:
    values = path_values(route, world_a)
    values[route.params[-1]] = path_values(route, world_b)[route.params[-1]]
    before = snapshot(world_b)
    path = route.path(values)

    response = send(world_a.client(), route, path, world_a)

    assert response.status_code == 404, (route, response.content)
    assert leaked(response, world_b, sent=path) == set()
    assert snapshot(world_b) == before


@pytest.mark.parametrize("route", SCOPED, ids=str)
def test_the_same_call_on_an_own_object_is_not_404(
    route: Route, world_a: World, world_b: World
) -> None:
    # The control of the matrix above: the 404s come from ownership, not from a broken request.
    response = send(world_a.client(), route, route.path(path_values(route, world_a)), world_a)

    assert response.status_code == 200, (route, response.content)
    assert leaked(response, world_b) == set()


@pytest.mark.parametrize("route", COLLECTION_READS, ids=str)
def test_lists_show_nothing_of_another_tenant(route: Route, world_a: World, world_b: World) -> None:
    response = send(world_a.client(), route, route.path({}), world_a)

    assert response.status_code == 200, response.content
    assert response.json()["items"], "the control: A's own objects are listed"
    assert leaked(response, world_b) == set()


@pytest.mark.parametrize(
    "query",
    [
        {"external_entity_id": "globex-root"},
        {"external_entity_ids": "globex-root"},
        {"api_keys": "GROUP_KEY"},
    ],
)
def test_filters_naming_another_tenants_objects_find_nothing(
    world_a: World, world_b: World, query: dict[str, str]
) -> None:
    query = {k: v.replace("GROUP_KEY", world_b.ids["group_key"]) for k, v in query.items()}
    path = "/v1/gateway/groups" if "external_entity_id" in query else "/v1/gateway/events"

    response = world_a.client().get(path, {"start_time": "2000-01-01T00:00:00Z", **query})

    assert response.status_code == 200, response.content
    assert response.json()["items"] == []


def test_a_group_cannot_hang_under_another_tenants_group(world_a: World, world_b: World) -> None:
    body = {
        "metadata": {"external_entity_id": "intruder"},
        "models": [model("acme/llama")],
        "hierarchy": {"parent_group_id": world_b.ids["group_id"], "limit_enforcement": "CASCADING"},
    }

    response = world_a.client().post("/v1/gateway/groups", body, format="json")

    assert response.status_code in (400, 404), response.content
    assert leaked(response, world_b, sent=json.dumps(body)) == set()
    assert not Group.objects.filter(external_entity_id="intruder").exists()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/gateway/groups",
            {"metadata": {"external_entity_id": "x"}, "models": [model("globex/llama")]},
        ),
        ("/v1/gateway/users", {"customer_id": "x", "models": [model("globex/llama")]}),
        (
            "/v1/gateway/endpoints",
            {
                "slug": "globex/stolen",
                "targets": [
                    {
                        "provider": "OPENAI_COMPATIBLE",
                        "base_url": "http://127.0.0.1:9/v1",
                        "target_model": "m",
                    }
                ],
            },
        ),
    ],
    ids=["group-with-their-slug", "user-with-their-slug", "endpoint-under-their-prefix"],
)
def test_creates_cannot_reference_another_tenants_slugs(
    world_a: World, world_b: World, path: str, body: dict[str, Any]
) -> None:
    response = world_a.client().post(path, body, format="json")

    assert response.status_code == 400, response.content
    assert set(response.json()) == {"error"}


def test_an_endpoint_cannot_use_another_tenants_secret(world_a: World, world_b: World) -> None:
    target = {
        "provider": "OPENAI_COMPATIBLE",
        "base_url": "http://127.0.0.1:9/v1",
        "target_model": "m",
        "secret_id": world_b.ids["secret_id"],
    }

    created = world_a.client().post(
        "/v1/gateway/endpoints", {"slug": "acme/borrowed", "targets": [target]}, format="json"
    )
    patched = world_a.client().patch(
        f"/v1/gateway/endpoints/{world_a.ids['endpoint_id']}", {"targets": [target]}, format="json"
    )

    assert (created.status_code, patched.status_code) == (400, 400), (
        created.content,
        patched.content,
    )
    assert not Endpoint.objects.filter(slug="acme/borrowed").exists()
