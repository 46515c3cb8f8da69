"""endpoint_route: what the proxy caches per slug (upstream URL, model name, credential)."""

from __future__ import annotations

from typing import Any

from django.test import override_settings

from groups.models import Secret, Workspace
from groups.services.audit import SYSTEM_ACTOR
from routing.selectors import ResolvedEndpoint, ResolvedTarget, endpoint_route
from routing.services import endpoint_create, endpoint_delete
from tests.routing.conftest import baseten, compat, openai


@override_settings(
    GATEWAY_BASETEN_URL_TEMPLATE="https://model-{model_id}.example/environments/{environment_name}/sync/v1",
    GATEWAY_OPENAI_BASE_URL="https://openai.example/v1",
)
def test_route_resolves_every_provider(
    workspace: Workspace, secret: Secret, django_assert_num_queries: Any
) -> None:
    endpoint = endpoint_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        slug="acme/llama",
        region="EU",
        targets=[
            baseten(secret_id=secret.id, environment_name="staging"),
            compat(base_url="http://127.0.0.1:9000/v1/"),
            openai(secret.id),
        ],
    )

    with django_assert_num_queries(2):
        route = endpoint_route(slug="acme/llama")

    assert route == ResolvedEndpoint(
        endpoint_id=endpoint.id,
        workspace_id=workspace.id,
        slug="acme/llama",
        region="EU",
        targets=(
            ResolvedTarget(
                0,
                "BASETEN",
                "https://model-abcd1234.example/environments/staging/sync/v1",
                "model",
                "sk-upstream-123",
            ),
            ResolvedTarget(
                1, "OPENAI_COMPATIBLE", "http://127.0.0.1:9000/v1", "meta-llama/Llama-3-70b", None
            ),
            ResolvedTarget(
                2, "OPENAI", "https://openai.example/v1", "gpt-4o-mini", "sk-upstream-123"
            ),
        ),
    )


def test_route_of_unknown_or_deleted_slug_is_none(workspace: Workspace) -> None:
    endpoint = endpoint_create(
        workspace=workspace, actor=SYSTEM_ACTOR, slug="acme/llama", targets=[compat()]
    )

    endpoint_delete(workspace=workspace, endpoint_id=endpoint.id, actor=SYSTEM_ACTOR)

    assert endpoint_route(slug="acme/llama") is None
    assert endpoint_route(slug="acme/other") is None


def test_route_query_count_does_not_grow_with_targets(
    workspace: Workspace, secret: Secret, django_assert_num_queries: Any
) -> None:
    endpoint_create(
        workspace=workspace, actor=SYSTEM_ACTOR, slug="acme/llama", targets=[openai(secret.id)] * 4
    )

    with django_assert_num_queries(2):
        route = endpoint_route(slug="acme/llama")

    assert route is not None and [t.position for t in route.targets] == [0, 1, 2, 3]
