"""Tenants and their customer hierarchy: workspaces, prefixes, domains, secrets, groups, limits."""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

from gateway_project.kernel.ids import new_audit_id, new_group_id, new_secret_id, new_workspace_id

SEGMENT_RE = r"^[a-z0-9][a-z0-9._-]*$"
segment_validator = RegexValidator(SEGMENT_RE, "Use lowercase letters, digits, '.', '_' or '-'.")


class Workspace(models.Model):
    """A tenant of the gateway: one AI lab."""

    id = models.CharField(primary_key=True, max_length=40, default=new_workspace_id, editable=False)
    name = models.CharField(max_length=255)
    onboarded = models.BooleanField(default=False)
    ed25519_public_key = models.TextField(
        blank=True,
        default="",
        help_text="Base64 raw 32-byte key or PEM; verifies key registration.",
    )
    upstream_allowlist = models.JSONField(
        null=True,
        blank=True,
        default=None,
        help_text=(
            "Hosts and CIDRs this workspace's upstreams and webhooks may reach although private; "
            "empty (null) uses the gateway's GATEWAY_UPSTREAM_ALLOWLIST default."
        ),
    )
    default_baseten_secret = models.ForeignKey(
        "Secret",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Authenticates BASETEN targets created without a secret_id.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class OrgPrefix(models.Model):
    """The first segment of endpoint slugs a workspace may create; globally unique."""

    prefix = models.CharField(max_length=100, unique=True, validators=[segment_validator])
    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, related_name="org_prefixes")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["prefix"]
        verbose_name_plural = "org prefixes"

    def __str__(self) -> str:
        return self.prefix


class CustomDomain(models.Model):
    """A Host name whose inference traffic only accepts its workspace's keys."""

    host = models.CharField(max_length=253, unique=True)
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="custom_domains"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["host"]

    def __str__(self) -> str:
        return self.host


class Secret(models.Model):
    """A provider credential, encrypted at rest and never shown again."""

    id = models.CharField(primary_key=True, max_length=40, default=new_secret_id, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="secrets")
    name = models.CharField(max_length=255)
    ciphertext = models.BinaryField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="secret_name_unique")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class LimitEnforcement(models.TextChoices):
    INDEPENDENT = "INDEPENDENT"
    CASCADING = "CASCADING"


class Group(models.Model):
    """One node of a workspace's customer hierarchy."""

    id = models.CharField(primary_key=True, max_length=40, default=new_group_id, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, related_name="groups")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    root = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The tree's root (itself for a root); its id is the Redis hash tag of the tree.",
    )
    depth = models.PositiveSmallIntegerField(default=1)
    name = models.CharField(max_length=255, blank=True, default="")
    external_entity_id = models.CharField(max_length=255)
    limit_enforcement = models.CharField(
        max_length=16, choices=LimitEnforcement.choices, default=LimitEnforcement.INDEPENDENT
    )
    is_legacy_user = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "external_entity_id"],
                condition=Q(deleted_at__isnull=True),
                name="group_external_id_unique_live",
            ),
            models.CheckConstraint(
                condition=Q(depth__gte=1) & Q(depth__lte=5), name="group_depth_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name or self.external_entity_id} ({self.id})"


class GroupModel(models.Model):
    """A group's access to one endpoint slug, with the limits configured on it."""

    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="model_access")
    slug = models.CharField(max_length=201)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["group_id", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["group", "slug"], name="group_model_slug_unique")
        ]

    def __str__(self) -> str:
        return self.slug


class LimitType(models.TextChoices):
    TOKEN = "TOKEN"
    REQUEST = "REQUEST"
    SPEND = "SPEND"


class LimitUnit(models.TextChoices):
    SECOND = "SECOND"
    MINUTE = "MINUTE"
    DAY = "DAY"
    MONTH = "MONTH"


class LimitKind(models.TextChoices):
    RATE = "RATE"
    USAGE = "USAGE"


class ModelLimit(models.Model):
    """One rate (SECOND/MINUTE) or usage (DAY/MONTH) limit on a group's slug."""

    access = models.ForeignKey(GroupModel, on_delete=models.CASCADE, related_name="limits")
    kind = models.CharField(max_length=8, choices=LimitKind.choices)
    type = models.CharField(max_length=8, choices=LimitType.choices)
    unit = models.CharField(max_length=8, choices=LimitUnit.choices)
    threshold = models.BigIntegerField()

    class Meta:
        ordering = ["access_id", "kind", "type"]
        constraints = [
            # At most one usage limit per (type, unit); groups.limits keeps rate limits to one per
            # type (SECOND or MINUTE).
            models.UniqueConstraint(
                fields=["access", "kind", "type", "unit"], name="limit_one_per_type_unit"
            ),
            models.CheckConstraint(condition=Q(threshold__gte=0), name="limit_threshold_gte_0"),
            models.CheckConstraint(
                condition=(Q(kind="RATE") & Q(unit__in=["SECOND", "MINUTE"]) & ~Q(type="SPEND"))
                | (Q(kind="USAGE") & Q(unit__in=["DAY", "MONTH"])),
                name="limit_kind_matches_unit_month",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type}/{self.unit} <= {self.threshold}"


class AuditEvent(models.Model):
    """Who changed what: one row per mutation, from the API or the admin."""

    id = models.CharField(primary_key=True, max_length=40, default=new_audit_id, editable=False)
    workspace = models.ForeignKey(
        Workspace, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    actor = models.CharField(
        max_length=255, help_text="mgmt:<key prefix>, staff:<username> or system"
    )
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=255)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type} {self.object_id} by {self.actor}"
