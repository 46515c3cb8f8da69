"""Billing health that cannot lie: each figure with its level (ok, warn, red) and the reason.

The pipeline (heartbeats, beat steps, the ingest lag, quarantine) is global; deliveries are per
workspace. `pipeline_alerts` is what the banner on every admin page shows: only the red ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Count, Max, Min, Q

from billing.liveness import BEAT, WORKER, Notes, ingest_lag_seconds, notes_read
from billing.models import DeliveryAttempt, DeliveryStatus, UsageEvent, WebhookDelivery
from billing.services.usage import USAGE_STREAM
from groups.models import Workspace

OK, WARN, RED = "ok", "warn", "red"
STEP_LABELS = {
    "usage_ingest": "usage ingest (Redis stream to database)",
    "events_batch": "batching usage events into deliveries",
    "deliveries_lease_reclaim": "reclaiming leases of dead workers",
    "deliveries_enqueue": "enqueueing due deliveries",
    "quarantine_publish": "publishing the quarantine counts",
    "usage_rollup": "summing new usage into the usage dashboard's rollup",
}


@dataclass(frozen=True)
class Finding:
    """One figure of the health page: what, its value in words, its level."""

    label: str
    value: str
    level: str = OK
    link: str = ""


def duration_words(seconds: float) -> str:
    """`3 h 12 min`, `4 min 05 s`, `12 s`: the two largest units."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def _ago(at: float | None, now: float) -> str:
    return "never" if at is None else f"{duration_words(max(0.0, now - at))} ago"


def heartbeat_findings(*, notes: Notes, now: float) -> list[Finding]:
    """Celery beat and worker: red when not heard from within the stale bound."""
    stale = float(settings.GATEWAY_BILLING_HEARTBEAT_STALE_SECONDS)
    findings = []
    for role, label in ((BEAT, "Celery beat heartbeat"), (WORKER, "Celery worker heartbeat")):
        at = notes.heartbeats.get(role)
        fresh = at is not None and now - at <= stale
        findings.append(Finding(label, _ago(at, now), OK if fresh else RED))
    return findings


def step_findings(*, notes: Notes, now: float) -> list[Finding]:
    """Each beat step: red while its latest outcome is a failure, with the error."""
    findings = []
    for name, label in STEP_LABELS.items():
        state = notes.steps.get(name)
        if state is None:
            findings.append(Finding(f"Step: {label}", "never ran", WARN))
        elif state.failing:
            value = f"failing since {_ago(state.failed_at, now)}: {state.error}"
            findings.append(Finding(f"Step: {label}", value, RED))
        else:
            findings.append(Finding(f"Step: {label}", f"last ok {_ago(state.ok_at, now)}"))
    return findings


def ingest_finding(*, now: float) -> Finding:
    """The age of the oldest usage event still waiting in the Redis stream."""
    lag = ingest_lag_seconds(stream=USAGE_STREAM, now=now)
    red = lag > float(settings.GATEWAY_BILLING_INGEST_LAG_RED_SECONDS)
    return Finding("Ingest lag", duration_words(lag), RED if red else OK)


def pending_level(age: float | None) -> str:
    """The level of the oldest pending delivery's age."""
    if age is None or age <= float(settings.GATEWAY_BILLING_PENDING_WARN_SECONDS):
        return OK
    return RED if age > float(settings.GATEWAY_BILLING_PENDING_RED_SECONDS) else WARN


def pipeline_findings(*, now: float | None = None) -> list[Finding]:
    """The global pipeline: heartbeats, steps, ingest lag (red when Redis cannot be read)."""
    now = now if now is not None else time.time()
    try:
        notes = notes_read()
        ingest = ingest_finding(now=now)
    except Exception as exc:  # noqa: BLE001 - an unreadable state is itself the finding
        return [Finding("Pipeline state in Redis", f"unreadable: {type(exc).__name__}: {exc}", RED)]
    return [*heartbeat_findings(notes=notes, now=now), *step_findings(notes=notes, now=now), ingest]


def workspace_findings(*, workspace: Workspace, now: datetime) -> list[Finding]:
    """A workspace's deliveries: last success, oldest pending, retries, failures, last error."""
    deliveries = WebhookDelivery.objects.filter(endpoint__workspace=workspace)
    stats = deliveries.aggregate(
        delivered=Max("delivered_at", filter=Q(status=DeliveryStatus.DELIVERED)),
        oldest=Min("created_at", filter=Q(status=DeliveryStatus.PENDING)),
        pending=Count("pk", filter=Q(status=DeliveryStatus.PENDING)),
        retrying=Count("pk", filter=Q(status=DeliveryStatus.PENDING, attempts__gt=0)),
        failed=Count("pk", filter=Q(status=DeliveryStatus.FAILED)),
        quarantined=Count("pk", filter=Q(status=DeliveryStatus.QUARANTINED)),
    )
    # Two counts, each read from its partial index, rather than one pass over every event.
    of_workspace = UsageEvent.objects.filter(workspace=workspace)
    events = {
        "unbatched": of_workspace.filter(batched_at__isnull=True, quarantined_at__isnull=True)
        .order_by()
        .count(),
        "quarantined": of_workspace.filter(quarantined_at__isnull=False).order_by().count(),
    }
    age = (now - stats["oldest"]).total_seconds() if stats["oldest"] else None
    return [
        Finding("Last successful delivery", _when(stats["delivered"], now)),
        Finding(
            "Oldest pending delivery",
            "none" if age is None else f"waiting {duration_words(age)}",
            pending_level(age),
        ),
        Finding("Pending deliveries", f"{stats['pending']:,}"),
        Finding("Retries in flight", f"{stats['retrying']:,}", WARN if stats["retrying"] else OK),
        Finding("Failed deliveries", f"{stats['failed']:,}", RED if stats["failed"] else OK),
        _last_error(workspace=workspace, now=now),
        Finding(
            "Quarantined deliveries / events",
            f"{stats['quarantined']:,} / {events['quarantined']:,}",
            RED if stats["quarantined"] or events["quarantined"] else OK,
        ),
        Finding("Events not yet batched", f"{events['unbatched']:,}"),
    ]


def _when(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "never"
    ago = duration_words(max(0.0, (now - at).total_seconds()))
    return f"{at:%Y-%m-%d %H:%M:%S} UTC ({ago} ago)"


def _last_error(*, workspace: Workspace, now: datetime) -> Finding:
    failed = DeliveryAttempt.objects.filter(delivery__endpoint__workspace=workspace).exclude(
        status_code__gte=200, status_code__lt=300
    )
    last = failed.order_by("-started_at").first()
    if last is None:
        return Finding("Last delivery error", "none")
    what = last.error or f"HTTP {last.status_code}"
    return Finding("Last delivery error", f"{what} ({_when(last.started_at, now)})", WARN)


def pipeline_alerts(*, now: float | None = None) -> list[Finding]:
    """What makes billing stalled or needing staff right now: red findings, global ones first,
    then any oldest pending delivery past the red age, then quarantined rows."""
    alerts = [f for f in pipeline_findings(now=now) if f.level == RED]
    oldest = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING).aggregate(
        at=Min("created_at")
    )["at"]
    if oldest is not None:
        age = (now if now is not None else time.time()) - oldest.timestamp()
        if pending_level(age) == RED:
            alerts.append(Finding("Oldest pending delivery", f"waiting {duration_words(age)}", RED))
    quarantined_events = UsageEvent.objects.filter(quarantined_at__isnull=False).count()
    quarantined_deliveries = WebhookDelivery.objects.filter(
        status=DeliveryStatus.QUARANTINED
    ).count()
    if quarantined_events:
        alerts.append(
            Finding(
                "Quarantined usage events",
                f"{quarantined_events:,} set aside, waiting for staff",
                RED,
                "admin:billing_usageevent_changelist?quarantine=quarantined",
            )
        )
    if quarantined_deliveries:
        alerts.append(
            Finding(
                "Quarantined webhook deliveries",
                f"{quarantined_deliveries:,} set aside, waiting for staff",
                RED,
                "admin:billing_webhookdelivery_changelist?status=quarantined",
            )
        )
    return alerts


def worker_heartbeat_age(*, now: float | None = None) -> float | None:
    """Seconds since a Celery worker last ran the heartbeat (None: never, or Redis unreadable)."""
    try:
        at = notes_read().heartbeats.get(WORKER)
    except Exception:  # noqa: BLE001 - unreadable means unknown, which callers treat as down
        return None
    return None if at is None else max(0.0, (now if now is not None else time.time()) - at)


def workspaces_with_webhooks() -> list[Workspace]:
    """Workspaces that have a webhook endpoint, by name (the ones billing delivers for)."""
    return list(
        Workspace.objects.filter(webhook_endpoints__isnull=False).distinct().order_by("name")
    )
