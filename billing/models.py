"""Usage events (the billing truth), webhook endpoints, deliveries and their attempts."""

from __future__ import annotations

import json
from typing import Any

from django.db import models
from django.db.models import Q

from gateway_project.kernel.ids import new_delivery_id, new_ulid, new_webhook_endpoint_id
from groups.models import Group, Workspace


class EventStatus(models.TextChoices):
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class UnreadableMetadata(dict[str, Any]):
    """Stored metadata Python cannot read back (nested too deep, a number too long): it reads as
    empty, and batching quarantines an event holding it instead of failing the whole batch."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class MetadataDecoder(json.JSONDecoder):
    """Reads any stored metadata without raising, so no single row can break a list of events."""

    def decode(self, s: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().decode(s, *args, **kwargs)
        except (RecursionError, ValueError) as exc:
            return UnreadableMetadata(f"unreadable requestMetadata: {exc}"[:200])


class UsageEvent(models.Model):
    """One per inference request that reached an upstream and produced output.

    On PostgreSQL the table is partitioned by day of `timestamp` (billing/services/partitions.py),
    and every unique key holds the partition key: the primary key is (idempotency_key, timestamp)
    there, and (request_id, timestamp) is unique. Every event of one request carries the same key
    and timestamp, so a replayed or rebuilt event still meets its first copy. The foreign keys
    need no index of their own: the (workspace, timestamp) and (group, timestamp) ones lead with
    them. Nor a constraint in the database: checking it on every inserted row was half of
    PostgreSQL's cost per event. Ingest checks each batch's (workspace, group) pairs itself
    (billing/services/usage_store.py), and neither row is ever deleted: a group is only marked
    deleted, and the ORM still refuses to delete either while an event names it (PROTECT)."""

    idempotency_key = models.CharField(primary_key=True, max_length=26, default=new_ulid)
    request_id = models.CharField(max_length=64)
    timestamp = models.DateTimeField()
    workspace = models.ForeignKey(
        Workspace,
        on_delete=models.PROTECT,
        related_name="usage_events",
        db_index=False,
        db_constraint=False,
    )
    group = models.ForeignKey(
        Group,
        on_delete=models.PROTECT,
        related_name="usage_events",
        db_index=False,
        db_constraint=False,
    )
    external_entity_id = models.CharField(max_length=255)
    api_key_prefix = models.CharField(max_length=16)
    model_slug = models.CharField(max_length=201)
    request_metadata = models.JSONField(default=dict, blank=True, decoder=MetadataDecoder)
    status = models.CharField(max_length=16, choices=EventStatus.choices)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    # The exact cost at the prices the request was admitted at; empty for unpriced endpoints.
    cost_currency = models.CharField(max_length=3, blank=True, default="")
    cost_amount = models.DecimalField(max_digits=40, decimal_places=12, null=True, blank=True)
    usage_estimated = models.BooleanField(default=False)
    http_status = models.PositiveSmallIntegerField(default=200)
    target = models.CharField(max_length=64, blank=True, default="", help_text="provider#position")
    total_ms = models.FloatField(default=0)
    upstream_ms = models.FloatField(default=0)
    first_byte_ms = models.FloatField(null=True, blank=True)
    batched_at = models.DateTimeField(null=True, blank=True)
    batch = models.CharField(
        max_length=26, blank=True, default="", help_text="The deliveries carrying this event"
    )
    ingest_note = models.CharField(
        max_length=500, blank=True, default="", help_text="What ingest had to drop or change"
    )
    quarantined_at = models.DateTimeField(null=True, blank=True)
    quarantine_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["timestamp", "idempotency_key"]
        indexes = [
            models.Index(fields=["workspace", "timestamp", "idempotency_key"]),
            models.Index(
                fields=["workspace", "created_at"],
                condition=Q(batched_at__isnull=True),
                name="usage_event_unbatched",
            ),
            models.Index(fields=["group", "timestamp"]),
            models.Index(
                fields=["quarantined_at"],
                condition=Q(quarantined_at__isnull=False),
                name="usage_event_quarantined",
            ),
            # Retention finds a partition's events still in a delivery that is not final.
            models.Index(fields=["batch"], condition=~Q(batch=""), name="usage_event_batch"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["request_id", "timestamp"], name="usage_event_request_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_slug} {self.status} {self.idempotency_key}"


class WebhookEndpoint(models.Model):
    """Where a workspace receives signed billing batches."""

    id = models.CharField(
        primary_key=True, max_length=40, default=new_webhook_endpoint_id, editable=False
    )
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2048)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.url


class WebhookSecret(models.Model):
    """A `whsec_` signing secret; two are active while a rotation overlaps."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="secrets")
    ciphertext = models.BinaryField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["endpoint_id", "-created_at"]

    def __str__(self) -> str:
        return f"secret #{self.pk} of {self.endpoint_id}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    DISABLED = "disabled"
    QUARANTINED = "quarantined"


# A delivery in one of these states will still be sent without anyone asking again: its events are
# not final (retention keeps them, billing/services/partitions.py).
UNSETTLED_DELIVERY_STATUSES = ("pending", "disabled", "quarantined")


class WebhookDelivery(models.Model):
    """One signed batch to one webhook endpoint; its body bytes are frozen at creation."""

    id = models.CharField(primary_key=True, max_length=40, default=new_delivery_id, editable=False)
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.PROTECT, related_name="deliveries"
    )
    body = models.BinaryField(editable=False)
    event_count = models.PositiveIntegerField()
    batch = models.CharField(
        max_length=26, blank=True, default="", db_index=True, help_text="Its events' batch"
    )
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="delivery_due",
            ),
            models.Index(
                fields=["created_at"],
                condition=Q(status="quarantined"),
                name="delivery_quarantined",
            ),
            # Deliveries whose events are not final (retention keeps their partitions).
            models.Index(
                fields=["batch"],
                condition=Q(status__in=UNSETTLED_DELIVERY_STATUSES),
                name="delivery_unsettled",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.status}"


class DeliveryAttempt(models.Model):
    """One HTTP attempt of a delivery, with a truncated response body."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.FloatField(default=0)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True, default="")
    error = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["delivery_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="attempt_number_unique")
        ]

    def __str__(self) -> str:
        return f"{self.delivery_id} #{self.number}"


class UsageRollup(models.Model):
    """Usage summed per workspace, group, slug, hour and currency: what the usage dashboard reads
    instead of scanning events. A row with an empty `group_id` sums the workspace's groups.

    Kept by `billing.services.rollup.usage_rollup_advance`: every event whose `created_at` is
    before `UsageRollupMark.through` is counted here exactly once, and no later one is."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    group_id = models.CharField(max_length=40, blank=True, default="")
    model_slug = models.CharField(max_length=201)
    hour = models.DateTimeField(help_text="The hour (UTC) of the events' timestamps")
    cost_currency = models.CharField(max_length=3, blank=True, default="")
    requests = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost_amount = models.DecimalField(max_digits=40, decimal_places=12, default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "group_id", "hour", "model_slug", "cost_currency"],
                name="usage_rollup_unique",
            )
        ]
        indexes = [models.Index(fields=["group_id", "hour"], name="usage_rollup_group")]

    def __str__(self) -> str:
        return f"{self.model_slug} {self.group_id or 'workspace'} {self.hour:%Y-%m-%d %H}:00"


class UsageRollupMark(models.Model):
    """The rollup's watermark (one row): events created before `through` are in the rollup."""

    through = models.DateTimeField()

    def __str__(self) -> str:
        return f"usage rolled up through {self.through}"
