"""Endpoints (slug -> ordered targets)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from gateway_project.kernel.ids import new_endpoint_id
from groups.models import Secret, Workspace


class Region(models.TextChoices):
    UNRESTRICTED = "UNRESTRICTED"
    EU = "EU"


class Provider(models.TextChoices):
    BASETEN = "BASETEN"
    OPENAI_COMPATIBLE = "OPENAI_COMPATIBLE"
    OPENAI = "OPENAI"


class Strategy(models.TextChoices):
    PRIORITY = "PRIORITY"
    WEIGHTED = "WEIGHTED"


class Endpoint(models.Model):
    """A routable model slug `{org_prefix}/{name}`."""

    id = models.CharField(primary_key=True, max_length=40, default=new_endpoint_id, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, related_name="endpoints")
    slug = models.CharField(max_length=201)
    region = models.CharField(max_length=16, choices=Region.choices, default=Region.UNRESTRICTED)
    # How a request picks among the targets; see routing/balancing.py.
    strategy = models.CharField(max_length=16, choices=Strategy.choices, default=Strategy.PRIORITY)
    # Seconds to the first byte for every target; None: the settings' rule (docs/inference.md).
    first_byte_timeout = models.FloatField(null=True, blank=True)
    pricing = models.JSONField(
        null=True,
        blank=True,
        help_text="Prices per million tokens (routing/pricing.py checks them); null: unpriced.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["slug"],
                condition=Q(deleted_at__isnull=True),
                name="endpoint_slug_unique_live",
            )
        ]

    def __str__(self) -> str:
        return self.slug


class Target(models.Model):
    """One upstream of an endpoint; position 0 is tried first."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="targets")
    position = models.PositiveSmallIntegerField()
    provider = models.CharField(max_length=24, choices=Provider.choices)
    model_id = models.CharField(max_length=255, blank=True, default="")
    environment_name = models.CharField(max_length=255, blank=True, default="")
    base_url = models.URLField(max_length=2048, blank=True, default="")
    target_model = models.CharField(max_length=255, blank=True, default="")
    secret = models.ForeignKey(
        Secret, null=True, blank=True, on_delete=models.PROTECT, related_name="targets"
    )
    # Share of requests under the WEIGHTED strategy (1..1000); ignored by PRIORITY.
    weight = models.PositiveSmallIntegerField(default=1)

    class Meta:
        ordering = ["endpoint_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "position"], name="target_position_unique"),
            models.CheckConstraint(condition=Q(position__lt=4), name="target_position_max"),
            models.CheckConstraint(
                condition=Q(weight__gte=1, weight__lte=1000), name="target_weight_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint_id}[{self.position}] {self.provider}"
