"""Malformed bodies on every management write route (enumerated from the URL resolver): oversized,
truncated, non-UTF-8 and deeply nested JSON, wrong content types. A 4xx envelope, never a 5xx."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from django.test import Client

from tests.security.conftest import World
from tests.security.routes import ROUTES, Route
from tests.security.test_tenant_isolation import path_values

pytestmark = pytest.mark.django_db

WRITES = [route for route in ROUTES if route.method in ("post", "patch", "put")]
BAD_BODIES = {
    "truncated": (b'{"metadata": {"name": "x"', 400),
    "not-utf8": (b'{"name": "\xff\xfe\xfa"}', 400),
    "latin-1": ('{"name": "caf\u00e9"}'.encode("latin-1"), 400),
    "nested-100k-arrays": (b"[" * 100_000 + b"]" * 100_000, 400),
    "nested-100k-objects": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400),
    "nested-5k-in-a-field": (b'{"name": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400),
    "nested-900-in-a-field": (b'{"name": ' + b"[" * 900 + b"]" * 900 + b"}", 400),
    "top-level-array": (b"[]", 400),
    "nul-escape": (b'{"name": "a\\u0000b"}', 400),
    "lone-surrogate": (b'{"name": "\\ud800"}', 400),
}


@pytest.fixture
def api(world_a: World) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {world_a.manage_key}")


def call(client: Client, route: Route, world: World, body: bytes, content_type: str) -> Any:
    """Send `body`; a registration body is correctly signed, so parsing is what gets tested."""
    path = route.path(path_values(route, world))
    signature = base64.b64encode(world.signing_key.sign(body)).decode()
    return client.generic(
        route.method.upper(), path, body, content_type=content_type, HTTP_X_SIGNATURE=signature
    )


def assert_envelope(response: Any) -> dict[str, Any]:
    assert response.status_code < 500, response.content[:300]
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code", "param"}
    assert isinstance(body["error"]["code"], str)
    return dict(body["error"])


@pytest.mark.parametrize("route", WRITES, ids=str)
@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_malformed_json_is_a_400(api: Client, world_a: World, route: Route, case: str) -> None:
    body, status = BAD_BODIES[case]

    response = call(api, route, world_a, body, "application/json")

    assert response.status_code == status, (route, case, response.content[:300])
    assert_envelope(response)


@pytest.mark.parametrize("route", WRITES, ids=str)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_a_body_that_is_not_json_is_415(
    api: Client, world_a: World, route: Route, content_type: str
) -> None:
    response = call(api, route, world_a, b'{"name": "x"}', content_type)

    assert response.status_code == 415, (route, response.content[:300])
    assert assert_envelope(response)["code"] == "unsupported_media_type"


@pytest.mark.parametrize("route", WRITES, ids=str)
def test_a_body_over_the_upload_limit_is_413(
    api: Client, world_a: World, route: Route, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = b'{"name": "' + b"x" * 4096 + b'"}'

    response = call(api, route, world_a, body, "application/json")

    assert response.status_code == 413, (route, response.content[:300])
    assert_envelope(response)
