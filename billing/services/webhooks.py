"""Webhook endpoints, their signing secrets and deliveries, as staff manage them (admin and
`manage.py create_workspace`): every write is audited."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing.models import (
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
)
from billing.signing import secret_generate
from gateway_project.kernel.encryption import encrypt
from gateway_project.kernel.errors import ValidationFailed
from gateway_project.kernel.netguard import allowlist_effective, url_check
from groups.models import Workspace
from groups.services.audit import audit_record


def webhook_endpoint_create(
    *, workspace: Workspace, url: str, actor: str
) -> tuple[WebhookEndpoint, str]:
    """Add a webhook endpoint with a fresh `whsec_` signing secret; the secret is returned once."""
    if not isinstance(url, str) or len(url) > 2048:
        raise ValidationFailed("url must be at most 2048 characters.", code="invalid_url")
    url_check(url=url, allowlist=allowlist_effective(workspace))
    secret = secret_generate()
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.create(workspace=workspace, url=url)
        WebhookSecret.objects.create(endpoint=endpoint, ciphertext=encrypt(secret))
        audit_record(
            actor=actor,
            action="webhook_endpoint.create",
            obj_type="webhook_endpoint",
            obj_id=endpoint.id,
            workspace_id=workspace.id,
            after={"url": url},
        )
    return endpoint, secret


def webhook_secret_rotate(
    *,
    endpoint: WebhookEndpoint,
    actor: str,
    now: datetime | None = None,
    overlap_hours: float | None = None,
) -> str:
    """Issue a new `whsec_` secret (returned once); the current ones expire after the overlap."""
    now = now or timezone.now()
    hours = (
        settings.GATEWAY_WEBHOOK_SECRET_OVERLAP_HOURS if overlap_hours is None else overlap_hours
    )
    expires = now + timedelta(hours=hours)
    secret = secret_generate()
    with transaction.atomic():
        live = WebhookSecret.objects.filter(endpoint=endpoint, expires_at__isnull=True)
        live.update(expires_at=expires)
        WebhookSecret.objects.filter(endpoint=endpoint, expires_at__gt=expires).update(
            expires_at=expires
        )
        WebhookSecret.objects.create(endpoint=endpoint, ciphertext=encrypt(secret))
        audit_record(
            actor=actor,
            action="webhook_secret.rotate",
            obj_type="webhook_endpoint",
            obj_id=endpoint.pk,
            workspace_id=endpoint.workspace_id,
            after={"old_secrets_expire_at": expires.isoformat()},
        )
    return secret


def webhook_endpoint_set_enabled(
    *, endpoint: WebhookEndpoint, enabled: bool, actor: str, reason: str = ""
) -> WebhookEndpoint:
    """Enable or disable an endpoint; disabling parks its pending deliveries, enabling resumes."""
    with transaction.atomic():
        locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        before = {"enabled": locked.enabled, "disabled_reason": locked.disabled_reason}
        locked.enabled, locked.disabled_reason = enabled, "" if enabled else reason
        locked.save(update_fields=["enabled", "disabled_reason", "updated_at"])
        source, target = (
            (DeliveryStatus.DISABLED, DeliveryStatus.PENDING)
            if enabled
            else (DeliveryStatus.PENDING, DeliveryStatus.DISABLED)
        )
        WebhookDelivery.objects.filter(endpoint=locked, status=source).update(
            status=target, next_attempt_at=timezone.now() if enabled else None
        )
        audit_record(
            actor=actor,
            action="webhook_endpoint.enable" if enabled else "webhook_endpoint.disable",
            obj_type="webhook_endpoint",
            obj_id=locked.pk,
            workspace_id=locked.workspace_id,
            before=before,
            after={"enabled": enabled, "disabled_reason": locked.disabled_reason},
        )
    endpoint.enabled, endpoint.disabled_reason = locked.enabled, locked.disabled_reason
    return locked


def delivery_resend(
    *, delivery: WebhookDelivery, actor: str, now: datetime | None = None
) -> WebhookDelivery:
    """Queue one more attempt (same id and bytes); refused while the endpoint is disabled."""
    if not delivery.endpoint.enabled:
        raise ValidationFailed("Enable the webhook endpoint first.", code="endpoint_disabled")
    with transaction.atomic():
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.PENDING, next_attempt_at=now or timezone.now(), lease_until=None
        )
        audit_record(
            actor=actor,
            action="webhook_delivery.resend",
            obj_type="webhook_delivery",
            obj_id=delivery.pk,
            workspace_id=delivery.endpoint.workspace_id,
            before={"status": delivery.status},
        )
    delivery.refresh_from_db()
    return delivery


RECOVER_LIMIT = 10_000


def deliveries_recover(
    *,
    since: datetime,
    actor: str,
    workspace: Workspace | None = None,
    now: datetime | None = None,
) -> int:
    """Queue every failed delivery created since `since` (oldest first, capped), enabled only."""
    failed = WebhookDelivery.objects.filter(
        status=DeliveryStatus.FAILED, created_at__gte=since, endpoint__enabled=True
    )
    if workspace is not None:
        failed = failed.filter(endpoint__workspace=workspace)
    ids = list(failed.order_by("created_at", "pk").values_list("pk", flat=True)[:RECOVER_LIMIT])
    with transaction.atomic():
        count = WebhookDelivery.objects.filter(pk__in=ids, status=DeliveryStatus.FAILED).update(
            status=DeliveryStatus.PENDING, next_attempt_at=now or timezone.now(), lease_until=None
        )
        audit_record(
            actor=actor,
            action="webhook_delivery.recover",
            obj_type="webhook_delivery",
            obj_id="*",
            workspace_id=workspace.pk if workspace is not None else None,
            after={"since": since.isoformat(), "count": count},
        )
    return count
