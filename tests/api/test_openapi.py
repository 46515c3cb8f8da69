"""The OpenAPI 3 schema: served, browsable, and true (a bounded schemathesis run finds no 5xx and no
response that violates it, against a live server)."""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.contrib.staticfiles import finders
from django.test import Client
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from groups import services as group_services
from groups.models import OrgPrefix, Workspace
from groups.services.audit import SYSTEM_ACTOR
from keys import services as key_services
from tests.api.conftest import endpoint_make, model

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Bounded for the suite; GATEWAY_SCHEMATHESIS_EXAMPLES=200 for a deeper local run.
MAX_EXAMPLES = int(os.environ.get("GATEWAY_SCHEMATHESIS_EXAMPLES", "10"))


@pytest.mark.django_db
def test_schema_is_served_as_openapi_3_json() -> None:
    response = Client().get("/v1/gateway/openapi.json")

    schema = response.json()
    assert response.status_code == 200
    assert schema["openapi"].startswith("3.")
    assert "/v1/gateway/groups/{group_id}" in schema["paths"]
    assert schema["components"]["securitySchemes"]["managementKey"]["scheme"] == "bearer"


@pytest.mark.django_db
def test_reference_page_loads_nothing_from_other_hosts() -> None:
    response = Client().get("/v1/gateway/docs")

    html = response.content.decode()
    assert response.status_code == 200
    assert "/v1/gateway/openapi.json" in html
    assert (
        '<script src="/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js">' in html
    )
    assert "http://" not in html and "https://" not in html
    assert finders.find("drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js")


@pytest.fixture
def live_world(transactional_db: None, live_server: Any) -> Iterator[dict[str, str]]:
    """A workspace with one object of each kind on the live server, and a MANAGE key."""
    workspace = Workspace.objects.create(name="Live", onboarded=True)
    OrgPrefix.objects.create(workspace=workspace, prefix="acme")
    endpoint = endpoint_make(workspace, "acme/llama")
    group = group_services.group_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        external_entity_id="g",
        models=[model("acme/llama", rpm=5, tpd=50)],
    )
    user, _ = group_services.user_upsert(
        workspace=workspace, customer_id="u", models=[model("acme/llama")], actor=SYSTEM_ACTOR
    )
    group_key, _ = key_services.api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)
    user_key, _ = key_services.api_key_create(workspace=workspace, group=user, actor=SYSTEM_ACTOR)
    _mk, plaintext = key_services.management_key_create(workspace=workspace, actor=SYSTEM_ACTOR)
    yield {
        "url": live_server.url,
        "key": plaintext,
        "endpoint_id": endpoint.id,
        "group_id": group.id,
        "user_id": user.id,
        "group_key": group_key.prefix,
        "user_key": user_key.prefix,
    }


def real_ids(case: Any, world: dict[str, str]) -> None:
    """Point generated path ids at live objects so the happy paths are exercised too."""
    users = case.path.startswith("/v1/gateway/users")
    known = {
        "endpoint_id": world["endpoint_id"],
        "group_id": world["group_id"],
        "user_id": world["user_id"],
        "owner_id": world["user_id"] if users else world["group_id"],
        "prefix": world["user_key"] if users else world["group_key"],
    }
    for name in list(case.path_parameters or {}):
        if name in known and zlib.crc32(str(case.path_parameters[name]).encode()) % 2 == 0:
            case.path_parameters[name] = known[name]


def operation_check(operation: Any, world: dict[str, str], mode: GenerationMode) -> None:
    """Up to MAX_EXAMPLES generated requests to one operation, each response checked."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        real_ids(case, world)
        case.call_and_validate(
            base_url=world["url"],
            headers={"Authorization": f"Bearer {world['key']}"},
            checks=CHECKS,
        )

    run()


def test_api_conforms_to_its_schema(live_world: dict[str, str]) -> None:
    schema = schemathesis.openapi.from_url(f"{live_world['url']}/v1/gateway/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    # Deletes last (keys before their owners) so the other operations meet live objects.
    operations.sort(key=lambda op: (op.method.upper() == "DELETE", -len(op.path), op.path))

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            operation_check(operation, live_world, mode)

    assert len(operations) >= 20
