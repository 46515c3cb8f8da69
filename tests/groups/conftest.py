"""Fixtures of the groups suite: live endpoints to grant, and a terse group factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from groups.models import Group, Workspace
from groups.services import group_create
from groups.services.audit import SYSTEM_ACTOR

SLUGS = ("acme/llama", "acme/qwen", "acme/mistral")


@pytest.fixture
def endpoints(workspace: Workspace) -> tuple[str, ...]:
    """Live endpoints of `workspace` (created directly: routing's services are not under test)."""
    from routing.models import Endpoint

    for slug in SLUGS:
        Endpoint.objects.create(workspace=workspace, slug=slug)
    return SLUGS


def model(
    slug: str = "acme/llama",
    *,
    rate: dict[str, Any] | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A wire model dict; `rate`/`usage` map "TYPE/UNIT" to a threshold."""
    return {
        "slug": slug,
        "rate_limits": [_limit(key, value) for key, value in (rate or {}).items()],
        "usage_limits": [_limit(key, value) for key, value in (usage or {}).items()],
    }


def _limit(key: str, threshold: Any) -> dict[str, Any]:
    type_, unit = key.split("/")
    return {"type": type_, "unit": unit, "threshold": threshold}


GroupFactory = Callable[..., Group]


@pytest.fixture
def make_group(workspace: Workspace, endpoints: tuple[str, ...]) -> GroupFactory:
    """Create a group through the service with sensible defaults."""
    counter = iter(range(1, 10_000))

    def create(
        models: list[dict[str, Any]] | None = None, *, parent: Group | None = None, **kwargs: Any
    ) -> Group:
        return group_create(
            workspace=workspace,
            actor=SYSTEM_ACTOR,
            external_entity_id=kwargs.pop("external_entity_id", f"cust_{next(counter)}"),
            models=models if models is not None else [model()],
            parent_group_id=parent.id if parent else None,
            **kwargs,
        )

    return create
