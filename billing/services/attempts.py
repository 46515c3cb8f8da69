"""The delivery state machine: claim under a lease, attempt once, record, reschedule.

An attempt that raises (a body or header that cannot be sent, a secret that cannot be read) puts
its delivery in `quarantined` with the error, instead of leaving it to be retried forever.
"""

from __future__ import annotations

import contextlib
import logging
import random
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from billing.delivery import Outcome, Resolve, webhook_post
from billing.models import DeliveryAttempt, DeliveryStatus, WebhookDelivery
from billing.sanitize import text_clean
from billing.schedule import retry_after_parse, retry_delay
from billing.selectors import webhook_secrets_active
from billing.services.usage import BILLING_METRICS_KEY, WEBHOOK_DELIVERIES_METRIC
from billing.services.webhooks import webhook_endpoint_set_enabled
from gateway_project.kernel.netguard import allowlist_effective
from groups.services.audit import SYSTEM_ACTOR

LEASE_MARGIN_SECONDS = 5.0
logger = logging.getLogger(__name__)


def lease_seconds() -> float:
    """How long a claim holds a delivery: longer than one attempt can take (connect, write,
    response head and the capped body read are each bounded by the timeout)."""
    return 4 * settings.GATEWAY_WEBHOOK_TIMEOUT + LEASE_MARGIN_SECONDS


def _claimable(*, delivery_id: str, now: datetime) -> QuerySet[WebhookDelivery]:
    due = WebhookDelivery.objects.filter(
        pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now
    )
    return due.filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))


def delivery_claim(*, delivery_id: str, now: datetime) -> WebhookDelivery | None:
    """Take the lease on a due delivery and count the attempt; None if not due or held elsewhere."""
    lease = now + timedelta(seconds=lease_seconds())
    claimable = _claimable(delivery_id=delivery_id, now=now)
    if connection.vendor == "postgresql":
        with transaction.atomic():
            delivery = claimable.select_for_update(skip_locked=True).first()
            if delivery is None:
                return None
            delivery.lease_until, delivery.attempts = lease, delivery.attempts + 1
            delivery.save(update_fields=["lease_until", "attempts"])
    # Without row locks (SQLite) the conditional UPDATE is the claim: one writer matches, once.
    elif not claimable.update(lease_until=lease, attempts=F("attempts") + 1):
        return None
    return WebhookDelivery.objects.select_related("endpoint__workspace").get(pk=delivery_id)


def delivery_attempt_run(
    *,
    delivery_id: str,
    now: datetime | None = None,
    rng: random.Random | None = None,
    resolve: Resolve | None = None,
) -> DeliveryAttempt | None:
    """Claim, make exactly one HTTP attempt, record it; None when there was nothing to do."""
    now = now or timezone.now()
    delivery = delivery_claim(delivery_id=delivery_id, now=now)
    if delivery is None:
        return None
    if not delivery.endpoint.enabled:
        _delivery_park(delivery=delivery)
        return None
    try:
        outcome = webhook_post(
            url=delivery.endpoint.url,
            msg_id=delivery.id,
            body=bytes(delivery.body),
            secrets=webhook_secrets_active(endpoint=delivery.endpoint, now=now),
            allowlist=allowlist_effective(delivery.endpoint.workspace),
            resolve=resolve,
        )
        attempt = attempt_record(delivery=delivery, outcome=outcome, now=now, rng=rng)
    except Exception as exc:  # noqa: BLE001 - whatever it is, it must not be retried forever
        delivery_quarantine(delivery=delivery, error=f"{type(exc).__name__}: {exc}")
        return None
    _attempt_count(delivered=outcome.delivered)
    return attempt


def _attempt_count(*, delivered: bool) -> None:
    """Count the attempt where every node's /metrics reads it (best effort: a metric is not worth
    failing a delivery that was made)."""
    field = f"{WEBHOOK_DELIVERIES_METRIC}:{'succeeded' if delivered else 'failed'}"
    with contextlib.suppress(RedisError, OSError):
        get_redis_connection("default").hincrby(BILLING_METRICS_KEY, field, 1)


def delivery_quarantine(*, delivery: WebhookDelivery, error: str) -> None:
    """Set a delivery that cannot be attempted aside, with its error, until staff release it."""
    error = text_clean(error)[:500]
    logger.error("webhook delivery %s quarantined: %s", delivery.pk, error)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.QUARANTINED, lease_until=None, next_attempt_at=None, last_error=error
    )


def _delivery_park(*, delivery: WebhookDelivery) -> None:
    """The endpoint was disabled meanwhile: the claim did not send, so it does not count."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.DISABLED, lease_until=None, attempts=F("attempts") - 1
    )


@transaction.atomic
def attempt_record(
    *, delivery: WebhookDelivery, outcome: Outcome, now: datetime, rng: random.Random | None = None
) -> DeliveryAttempt:
    """Log the attempt; the delivery becomes delivered, retried, failed or disabled (410)."""
    attempt = DeliveryAttempt.objects.create(
        delivery=delivery,
        number=delivery.attempts,
        started_at=now,
        duration_ms=outcome.duration_ms,
        status_code=outcome.status_code,
        response_body=text_clean(outcome.response_body),
        error=text_clean(outcome.error),
    )
    changes = _next_state(delivery=delivery, outcome=outcome, now=now, rng=rng)
    WebhookDelivery.objects.filter(pk=delivery.pk, attempts=delivery.attempts).update(
        lease_until=None,
        last_status_code=outcome.status_code,
        last_error=text_clean(
            outcome.error or ("" if outcome.delivered else outcome.response_body[:500])
        ),
        **changes,
    )
    if outcome.status_code == 410:
        webhook_endpoint_set_enabled(
            endpoint=delivery.endpoint,
            enabled=False,
            actor=SYSTEM_ACTOR,
            reason="receiver answered 410 Gone",
        )
    return attempt


def _next_state(
    *, delivery: WebhookDelivery, outcome: Outcome, now: datetime, rng: random.Random | None
) -> dict[str, object]:
    if outcome.delivered:
        return {"status": DeliveryStatus.DELIVERED, "delivered_at": now, "next_attempt_at": None}
    if outcome.status_code == 410:
        return {"status": DeliveryStatus.DISABLED, "next_attempt_at": None}
    retry_after = retry_after_parse(outcome.retry_after, now=now)
    first = delivery.attempt_log.order_by("number").values_list("started_at", flat=True).first()
    since_first = (now - first).total_seconds() if first is not None else None
    delay = retry_delay(
        attempts=delivery.attempts, since_first=since_first, retry_after=retry_after, rng=rng
    )
    if delay is None:
        return {"status": DeliveryStatus.FAILED, "next_attempt_at": None}
    return {"status": DeliveryStatus.PENDING, "next_attempt_at": now + delay}


def deliveries_lease_reclaim(*, now: datetime) -> int:
    """Release leases of workers lost mid-attempt; the beat resends (same id, same bytes)."""
    expired = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, lease_until__lt=now)
    return expired.update(
        lease_until=None, last_error="lease expired: the worker was lost mid-attempt"
    )
