"""Credentials: workspace management keys and federated (customer) keys; only hashes are kept."""

from __future__ import annotations

from django.db import models

from gateway_project.kernel.ids import new_api_key_id, new_management_key_id
from groups.models import Group, Workspace


class KeyScope(models.TextChoices):
    MANAGE = "MANAGE"
    VIEW = "VIEW"


class ManagementKey(models.Model):
    """A workspace operator's key for /v1/gateway/*."""

    id = models.CharField(
        primary_key=True, max_length=40, default=new_management_key_id, editable=False
    )
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="management_keys"
    )
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    name = models.CharField(max_length=255, blank=True, default="")
    scope = models.CharField(max_length=8, choices=KeyScope.choices, default=KeyScope.MANAGE)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoke_at = models.DateTimeField(
        null=True, blank=True, help_text="A revoke staff scheduled (after a rotation), in UTC."
    )

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.prefix

    @property
    def actor(self) -> str:
        """Who the audit trail says acted when this key made a management call."""
        return f"mgmt:{self.prefix}"


class ApiKey(models.Model):
    """A federated key bound to one group; uses the group's effective limits."""

    id = models.CharField(primary_key=True, max_length=40, default=new_api_key_id, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    group = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="api_keys")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    name = models.CharField(max_length=255, blank=True, default="")
    slugs = models.JSONField(
        null=True, blank=True, help_text="Legacy users only: the subset of slugs this key may call."
    )
    registered = models.BooleanField(
        default=False, help_text="Supplied by the workspace, not minted."
    )
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="The key stops working at this instant (none: never)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoke_at = models.DateTimeField(
        null=True, blank=True, help_text="A revoke staff scheduled (after a rotation), in UTC."
    )

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["group", "revoked_at"])]

    def __str__(self) -> str:
        return self.prefix
