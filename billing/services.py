"""Billing writes: usage events (recorded by the inference path) and webhook endpoints."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections
from redis.exceptions import NoScriptError, RedisError

from billing.models import UsageEvent

# --- Usage events (the inference path's public face) ---------------------------------

USAGE_STREAM = "gw:usage"
DEAD_LETTER_STREAM = "gw:usage:dead"
# Billing numbers every node's /metrics serves (a Redis hash: metric name -> value).
BILLING_METRICS_KEY = "gw:billing:metrics"
DEAD_LETTERS_METRIC = "gateway_usage_dead_letters_total"
QUARANTINED_EVENTS_METRIC = "gateway_billing_quarantined_events"
QUARANTINED_DELIVERIES_METRIC = "gateway_billing_quarantined_deliveries"
_usage_logger = logging.getLogger("billing.usage")


# KEYS: the usage stream, the in-flight journal hash. ARGV: event JSON, the journal field.
_RECORD_SCRIPT = """
redis.call('XADD', KEYS[1], '*', 'e', ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[2])
return 1
"""
_RECORD_SHA = hashlib.sha1(_RECORD_SCRIPT.encode()).hexdigest()


async def usage_event_record(
    *, client: Any, event: dict[str, Any], note: tuple[str, str] | None = None
) -> None:
    """Make one usage event durable: XADD to the usage stream, or a DB insert if Redis fails.

    `note` (hash key, field) is the request's in-flight journal note, removed in the same step.
    """
    payload = json.dumps(event, separators=(",", ":"))
    try:
        if note is None:
            await client.xadd(USAGE_STREAM, {"e": payload})
            return
        try:
            await client.evalsha(_RECORD_SHA, 2, USAGE_STREAM, note[0], payload, note[1])
        except NoScriptError:
            await client.script_load(_RECORD_SCRIPT)
            await client.evalsha(_RECORD_SHA, 2, USAGE_STREAM, note[0], payload, note[1])
    except (RedisError, OSError):
        _usage_logger.warning("usage stream unavailable; inserting directly", exc_info=True)
        await sync_to_async(_store_and_release, thread_sensitive=False)([event])
        if note is not None:
            # Stored: the note may go (if it stays, a reaper's event for it is a duplicate
            # request id, which ingest drops).
            with contextlib.suppress(RedisError, OSError):
                await client.hdel(*note)


def usage_events_store(*, events: list[dict[str, Any]]) -> None:
    """Insert events (the shape usage_event_record takes), skipping request ids already stored."""
    from billing.ingest import usage_event_build

    rows = [usage_event_build(event=event) for event in events]
    UsageEvent.objects.bulk_create(rows, ignore_conflicts=True)


def usage_dead_letter_park(*, client: Any, raw: bytes, error: str) -> None:
    """Keep a usage event that cannot be stored at all in the dead-letter stream, with its error,
    and count it for /metrics."""
    from billing.sanitize import text_clean

    error = text_clean(error)[:500]
    _usage_logger.error("usage event parked in %s: %s", DEAD_LETTER_STREAM, error)
    pipe = client.pipeline(transaction=False)
    pipe.xadd(DEAD_LETTER_STREAM, {"e": raw, "error": error})
    pipe.hincrby(BILLING_METRICS_KEY, DEAD_LETTERS_METRIC, 1)
    pipe.execute()


def _store_and_release(events: list[dict[str, Any]]) -> None:
    from billing.ingest import usage_event_store_lenient

    try:
        for event in events:
            usage_event_store_lenient(event=event)
    finally:
        connections.close_all()


# --- Webhook endpoints (created by staff: admin and `manage.py create_workspace`) --------------


def webhook_endpoint_create(*, workspace: Any, url: str, actor: str) -> tuple[Any, str]:
    """Add a webhook endpoint with a fresh `whsec_` signing secret; the secret is returned once."""
    # Imported here so this staff-only tool adds nothing to the inference path's imports.
    from django.db import transaction

    from billing.models import WebhookEndpoint, WebhookSecret
    from billing.signing import secret_generate
    from gateway_project.kernel.encryption import encrypt
    from gateway_project.kernel.errors import ValidationFailed
    from gateway_project.kernel.netguard import allowlist_effective, url_check
    from groups.services.audit import audit_record

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


# --- Webhook secrets, endpoint state, resend and recovery ------------------


def webhook_secret_rotate(
    *, endpoint: Any, actor: str, now: Any = None, overlap_hours: float | None = None
) -> str:
    """Issue a new `whsec_` secret (returned once); the current ones expire after the overlap."""
    from datetime import timedelta

    from django.conf import settings
    from django.db import transaction
    from django.utils import timezone

    from billing.models import WebhookSecret
    from billing.signing import secret_generate
    from gateway_project.kernel.encryption import encrypt
    from groups.services.audit import audit_record

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
    *, endpoint: Any, enabled: bool, actor: str, reason: str = ""
) -> Any:
    """Enable or disable an endpoint; disabling parks its pending deliveries, enabling resumes."""
    from django.db import transaction
    from django.utils import timezone

    from billing.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
    from groups.services.audit import audit_record

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


def delivery_resend(*, delivery: Any, actor: str, now: Any = None) -> Any:
    """Queue one more attempt (same id and bytes); refused while the endpoint is disabled."""
    from django.db import transaction
    from django.utils import timezone

    from billing.models import DeliveryStatus, WebhookDelivery
    from gateway_project.kernel.errors import ValidationFailed
    from groups.services.audit import audit_record

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


def deliveries_recover(*, since: Any, actor: str, workspace: Any = None, now: Any = None) -> int:
    """Queue every failed delivery created since `since` (oldest first, capped), enabled only."""
    from django.db import transaction
    from django.utils import timezone

    from billing.models import DeliveryStatus, WebhookDelivery
    from groups.services.audit import audit_record

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


# --- Quarantine: rows a pipeline step set aside, released by staff once the cause is fixed ----


def usage_events_release(*, ids: list[str], actor: str, drop_metadata: bool = False) -> int:
    """Put quarantined events back in line for batching (the next beat tries them again);
    `drop_metadata` empties their metadata first, for metadata that can never be sent."""
    from django.db import transaction
    from django.db.models import Value
    from django.db.models.functions import Concat, Left

    from billing.models import UsageEvent
    from groups.services.audit import audit_record

    with transaction.atomic():
        events = UsageEvent.objects.filter(pk__in=ids, quarantined_at__isnull=False)
        released = list(events.values_list("pk", "workspace_id", "quarantine_error"))
        changes: dict[str, Any] = {}
        if drop_metadata:
            note = Left(Concat(Value("requestMetadata dropped by staff; "), "ingest_note"), 500)
            changes = {"request_metadata": {}, "ingest_note": note}
        events.update(quarantined_at=None, quarantine_error="", batched_at=None, **changes)
        for pk, workspace_id, error in released:
            audit_record(
                actor=actor,
                action="usage_event.release",
                obj_type="usage_event",
                obj_id=pk,
                workspace_id=workspace_id,
                before={"quarantine_error": error},
                after={"metadata_dropped": drop_metadata},
            )
    return len(released)


def deliveries_release(*, ids: list[str], actor: str, now: Any = None) -> int:
    """Make quarantined deliveries pending again, due now (same id and bytes)."""
    from django.db import transaction
    from django.utils import timezone

    from billing.models import DeliveryStatus, WebhookDelivery
    from groups.services.audit import audit_record

    with transaction.atomic():
        deliveries = WebhookDelivery.objects.filter(pk__in=ids, status=DeliveryStatus.QUARANTINED)
        released = list(deliveries.values_list("pk", "endpoint__workspace_id", "last_error"))
        deliveries.update(
            status=DeliveryStatus.PENDING, next_attempt_at=now or timezone.now(), lease_until=None
        )
        for pk, workspace_id, error in released:
            audit_record(
                actor=actor,
                action="webhook_delivery.release",
                obj_type="webhook_delivery",
                obj_id=pk,
                workspace_id=workspace_id,
                before={"status": DeliveryStatus.QUARANTINED, "last_error": error},
            )
    return len(released)
