"""Writes of endpoints: create, edit (targets, rename) and soft delete."""

from __future__ import annotations

import re
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from gateway_project.kernel.errors import NotFound, ValidationFailed
from gateway_project.kernel.invalidation import config_changed
from groups import selectors as group_selectors
from groups import services as group_services
from groups.models import OrgPrefix, Workspace
from groups.services.audit import audit_record
from routing.models import Endpoint, Region, Target
from routing.pricing import pricing_clean
from routing.strategy import routing_clean, routing_wire
from routing.targets import target_rows, target_wire, targets_clean

SEGMENT = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
SEGMENT_MAX_LENGTH = 100
UNCHANGED: Any = object()


def _slug_taken(slug: str) -> ValidationFailed:
    return ValidationFailed(
        f"The slug {slug!r} is already in use.", code="slug_taken", param="slug"
    )


def slug_check(*, workspace: Workspace, slug: Any) -> str:
    """A well-formed `{org_prefix}/{name}` with an owned prefix, unused by live endpoints."""
    parts = slug.split("/") if isinstance(slug, str) else []
    if len(parts) != 2 or not all(SEGMENT.match(p) and len(p) <= SEGMENT_MAX_LENGTH for p in parts):
        raise ValidationFailed(
            "slug must be '{org_prefix}/{name}', each segment [a-z0-9][a-z0-9._-]* of at most 100 "
            "characters.",
            code="invalid_slug",
            param="slug",
        )
    if not OrgPrefix.objects.filter(workspace=workspace, prefix=parts[0]).exists():
        raise ValidationFailed(
            f"The org prefix {parts[0]!r} is not registered to this workspace.",
            code="slug_prefix_not_owned",
            param="slug",
        )
    if Endpoint.objects.filter(slug=slug, deleted_at__isnull=True).exists():
        raise _slug_taken(slug)
    return str(slug)


def _region_check(region: Any) -> str:
    if region not in Region.values:
        raise ValidationFailed(
            "region must be UNRESTRICTED or EU.", code="invalid_region", param="region"
        )
    return str(region)


def _snapshot(endpoint: Endpoint, targets: list[Target]) -> dict[str, Any]:
    snapshot = {
        "slug": endpoint.slug,
        "region": endpoint.region,
        "routing": routing_wire(endpoint),
        "targets": [target_wire(t) for t in targets],
    }
    if endpoint.pricing is not None:
        snapshot["pricing"] = endpoint.pricing
    return snapshot


def _reprice(endpoint: Endpoint, pricing: Any) -> None:
    """Set the endpoint's prices; SPEND limits count in its currency, so while any group has one
    on the slug the pricing may change its prices but not go away or change currency."""
    cleaned = pricing_clean(pricing)
    old = None if endpoint.pricing is None else str(endpoint.pricing["currency"])
    currency = None if cleaned is None else cleaned["currency"]
    if (
        old is not None
        and currency != old
        and group_selectors.slug_spend_limited(
            workspace_id=endpoint.workspace_id, slug=endpoint.slug
        )
    ):
        raise ValidationFailed(
            f"SPEND limits on {endpoint.slug} count in {old}: remove them before "
            "removing the pricing or changing its currency.",
            code="pricing_in_use",
            param="pricing",
        )
    endpoint.pricing = cleaned


def _save_slug(endpoint: Endpoint, **kwargs: Any) -> None:
    """Save under a savepoint: the live-slug unique constraint settles a race as slug_taken."""
    try:
        with transaction.atomic():
            endpoint.save(**kwargs)
    except IntegrityError as exc:
        raise _slug_taken(endpoint.slug) from exc


def _audit(actor: str, action: str, endpoint: Endpoint, before: Any, after: Any) -> None:
    audit_record(
        actor=actor,
        action=action,
        obj_type="endpoint",
        obj_id=endpoint.id,
        workspace_id=endpoint.workspace_id,
        before=before,
        after=after,
    )


@transaction.atomic
def endpoint_create(
    *,
    workspace: Workspace,
    actor: str,
    slug: str,
    targets: list[dict[str, Any]],
    region: str = Region.UNRESTRICTED,
    routing: dict[str, Any] | None = None,
    pricing: dict[str, Any] | None = None,
) -> Endpoint:
    """Create a routable slug with 1..4 targets (ordered by priority, optionally weighted),
    optionally priced."""
    slug = slug_check(workspace=workspace, slug=slug)
    region = _region_check(region)
    rules = routing_clean({} if routing is None else routing)
    cleaned = targets_clean(workspace=workspace, targets=targets)
    priced = pricing_clean(pricing)
    endpoint = Endpoint(workspace=workspace, slug=slug, region=region, pricing=priced, **rules)
    _save_slug(endpoint, force_insert=True)
    rows = Target.objects.bulk_create(target_rows(endpoint_id=endpoint.id, cleaned=cleaned))
    _audit(actor, "endpoint.create", endpoint, None, _snapshot(endpoint, rows))
    config_changed(workspace_id=workspace.id)
    return endpoint


def _live_for_update(workspace: Workspace, endpoint_id: str) -> Endpoint:
    endpoint = (
        Endpoint.objects.select_for_update()
        .filter(workspace=workspace, id=endpoint_id, deleted_at__isnull=True)
        .first()
    )
    if endpoint is None:
        raise NotFound("No such endpoint.", code="endpoint_not_found")
    return endpoint


def _rename(endpoint: Endpoint, *, workspace: Workspace, slug: Any) -> None:
    if slug == endpoint.slug:
        return
    old_slug, endpoint.slug = endpoint.slug, slug_check(workspace=workspace, slug=slug)
    _save_slug(endpoint, update_fields=["slug", "updated_at"])
    group_services.group_models_rename_slug(
        workspace_id=workspace.id, old_slug=old_slug, new_slug=endpoint.slug
    )


@transaction.atomic
def endpoint_update(
    *,
    workspace: Workspace,
    endpoint_id: str,
    actor: str,
    slug: str | None = None,
    targets: list[dict[str, Any]] | None = None,
    routing: dict[str, Any] | None = None,
    pricing: dict[str, Any] | None = UNCHANGED,
) -> Endpoint:
    """Rename the slug (groups follow), replace the whole target list, the routing and/or the
    prices (None: unpriced); a price applies to requests admitted after the change."""
    endpoint = _live_for_update(workspace, endpoint_id)
    current = list(endpoint.targets.order_by("position"))
    before = _snapshot(endpoint, current)
    cleaned = None if targets is None else targets_clean(workspace=workspace, targets=targets)
    if pricing is not UNCHANGED:
        _reprice(endpoint, pricing)
    if slug is not None:
        _rename(endpoint, workspace=workspace, slug=slug)
    if cleaned is not None:
        endpoint.targets.all().delete()
        current = Target.objects.bulk_create(target_rows(endpoint_id=endpoint.id, cleaned=cleaned))
    fields = ["updated_at", "pricing"]
    if routing is not None:
        for name, value in routing_clean(routing).items():
            setattr(endpoint, name, value)
            fields.append(name)
    endpoint.save(update_fields=fields)
    _audit(actor, "endpoint.update", endpoint, before, _snapshot(endpoint, current))
    config_changed(workspace_id=workspace.id)
    return endpoint


@transaction.atomic
def endpoint_delete(*, workspace: Workspace, endpoint_id: str, actor: str) -> Endpoint:
    """Soft-delete: the slug stops routing at once and is free for reuse."""
    endpoint = _live_for_update(workspace, endpoint_id)
    before = _snapshot(endpoint, list(endpoint.targets.order_by("position")))
    endpoint.deleted_at = timezone.now()
    endpoint.save(update_fields=["deleted_at", "updated_at"])
    _audit(
        actor,
        "endpoint.delete",
        endpoint,
        before,
        {**before, "deleted_at": endpoint.deleted_at.isoformat()},
    )
    config_changed(workspace_id=workspace.id)
    return endpoint
