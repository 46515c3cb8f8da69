"""Reads of endpoints: workspace-scoped lookups, wire shapes, and the proxy's route resolution."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Prefetch, QuerySet

from gateway_project.kernel.compiled import CompiledRead
from gateway_project.kernel.errors import NotFound
from groups.models import Workspace
from routing.models import Endpoint, Target
from routing.pricing import pricing_from
from routing.targets import ResolvedEndpoint, ResolvedTarget, target_resolve, target_wire

__all__ = [
    "ResolvedEndpoint",
    "ResolvedTarget",
    "endpoint_get",
    "endpoint_list",
    "endpoint_live_slugs",
    "endpoint_priced_slugs",
    "endpoint_route",
    "endpoint_targets",
]


_LIVE_SLUGS: CompiledRead[Endpoint] = CompiledRead(
    lambda workspace_id, slugs: Endpoint.objects.filter(
        workspace_id=workspace_id, slug__in=slugs, deleted_at__isnull=True
    ).values_list("slug")
)


def endpoint_live_slugs(*, workspace_id: str, slugs: Iterable[str]) -> set[str]:
    """The subset of `slugs` that are live endpoints of the workspace."""
    wanted = sorted(set(slugs))
    if not wanted:
        return set()
    return {slug for (slug,) in _LIVE_SLUGS.rows(workspace_id=workspace_id, slugs=wanted)}


def endpoint_priced_slugs(*, workspace_id: str, slugs: Iterable[str]) -> set[str]:
    """The subset of `slugs` that are live endpoints of the workspace with a price (rows locked
    for the caller's transaction, so a repricing cannot slip between its check and its write)."""
    wanted = list(slugs)
    if not wanted:
        return set()
    live = Endpoint.objects.select_for_update().filter(
        workspace_id=workspace_id, slug__in=wanted, deleted_at__isnull=True, pricing__isnull=False
    )
    return set(live.values_list("slug", flat=True))


def endpoint_list(*, workspace: Workspace) -> QuerySet[Endpoint]:
    """The workspace's live endpoints in creation order, targets prefetched."""
    return (
        Endpoint.objects.filter(workspace=workspace, deleted_at__isnull=True)
        .order_by("id")
        .prefetch_related(Prefetch("targets", queryset=Target.objects.order_by("position")))
    )


def endpoint_get(*, workspace: Workspace, endpoint_id: str) -> Endpoint:
    """One live endpoint of the workspace, else NotFound (other tenants' ids included)."""
    endpoint = endpoint_list(workspace=workspace).filter(id=endpoint_id).first()
    if endpoint is None:
        raise NotFound("No such endpoint.", code="endpoint_not_found")
    return endpoint


def endpoint_targets(*, endpoint: Endpoint) -> list[dict[str, Any]]:
    """The endpoint's targets in priority order, each in its provider's wire shape."""
    targets = sorted(endpoint.targets.all(), key=lambda t: t.position)
    return [target_wire(t) for t in targets]


def endpoint_route(*, slug: str) -> ResolvedEndpoint | None:
    """The slug's live endpoint with upstream URLs, models and credentials resolved (2 queries)."""
    live = Endpoint.objects.filter(slug=slug, deleted_at__isnull=True)
    endpoint = live.select_related("workspace__default_baseten_secret").first()
    if endpoint is None:
        return None
    targets = Target.objects.filter(endpoint=endpoint).select_related("secret").order_by("position")
    return ResolvedEndpoint(
        endpoint_id=endpoint.id,
        workspace_id=endpoint.workspace_id,
        slug=endpoint.slug,
        region=endpoint.region,
        targets=tuple(target_resolve(t, workspace=endpoint.workspace) for t in targets),
        strategy=endpoint.strategy,
        first_byte_timeout=endpoint.first_byte_timeout,
        pricing=pricing_from(endpoint.pricing),
    )
