"""Writes of tenant settings: workspaces, org prefixes, custom domains, secrets (staff and API)."""

from __future__ import annotations

import re
from typing import Any

from django.db import transaction

from gateway_project.kernel.encryption import encrypt
from gateway_project.kernel.errors import ValidationFailed
from gateway_project.kernel.hosts import host_normalize
from gateway_project.kernel.invalidation import config_changed
from gateway_project.kernel.netguard import allowlist_parse
from groups.models import SEGMENT_RE, CustomDomain, OrgPrefix, Secret, Workspace
from groups.services.audit import audit_record

_HOST_RE = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$"
)


def workspace_snapshot(workspace: Workspace) -> dict[str, Any]:
    """The audited fields of a workspace."""
    return {
        "id": workspace.id,
        "name": workspace.name,
        "onboarded": workspace.onboarded,
        "ed25519_public_key": workspace.ed25519_public_key,
        "upstream_allowlist": workspace.upstream_allowlist,
        "default_baseten_secret": workspace.default_baseten_secret_id,
    }


def text_check(value: Any, *, param: str, code: str, max_length: int, min_length: int) -> str:
    """`value` if it is a string of min_length..max_length characters, else ValidationFailed."""
    if not isinstance(value, str) or not min_length <= len(value) <= max_length:
        raise ValidationFailed(
            f"{param} must be a string of {min_length}..{max_length} characters",
            code=code,
            param=param,
        )
    return value


@transaction.atomic
def workspace_create(*, name: str, actor: str, onboarded: bool = False) -> Workspace:
    """Create a tenant (staff only)."""
    text_check(name, param="name", code="invalid_name", min_length=1, max_length=255)
    workspace = Workspace.objects.create(name=name, onboarded=onboarded)
    audit_record(
        actor=actor,
        action="workspace.create",
        obj_type="workspace",
        obj_id=workspace.id,
        workspace_id=workspace.id,
        after=workspace_snapshot(workspace),
    )
    return workspace


@transaction.atomic
def workspace_update(
    *,
    workspace: Workspace,
    actor: str,
    name: str | None = None,
    ed25519_public_key: str | None = None,
) -> Workspace:
    """Rename a workspace or set its key-registration public key."""
    before = workspace_snapshot(workspace)
    if name is not None:
        workspace.name = text_check(
            name, param="name", code="invalid_name", min_length=1, max_length=255
        )
    if ed25519_public_key is not None:
        workspace.ed25519_public_key = ed25519_public_key.strip()
    workspace.save()
    audit_record(
        actor=actor,
        action="workspace.update",
        obj_type="workspace",
        obj_id=workspace.id,
        workspace_id=workspace.id,
        before=before,
        after=workspace_snapshot(workspace),
    )
    return workspace


def _workspace_set(
    *, workspace: Workspace, actor: str, action: str, fields: dict[str, Any]
) -> Workspace:
    """Save fields of a workspace the data plane caches, audit them and announce the change."""
    before = workspace_snapshot(workspace)
    for name, value in fields.items():
        setattr(workspace, name, value)
    workspace.save(update_fields=[*fields, "updated_at"])
    audit_record(
        actor=actor,
        action=action,
        obj_type="workspace",
        obj_id=workspace.id,
        workspace_id=workspace.id,
        before=before,
        after=workspace_snapshot(workspace),
    )
    config_changed(workspace_id=workspace.id)
    return workspace


@transaction.atomic
def workspace_set_upstream_allowlist(
    *, workspace: Workspace, entries: list[str] | None, actor: str
) -> Workspace:
    """Set the hosts/CIDRs this workspace's upstreams and webhooks may reach (None: the default)."""
    param = "upstream_allowlist"
    if entries is not None and not isinstance(entries, list):
        raise ValidationFailed(f"{param} must be a list", code="invalid_allowlist", param=param)
    try:
        clean = None if entries is None else allowlist_parse(entries)
    except ValueError as exc:
        raise ValidationFailed(str(exc), code="invalid_allowlist", param=param) from exc
    # Cached routes carry the allowlist the proxy checks at connect time.
    return _workspace_set(
        workspace=workspace,
        actor=actor,
        action="workspace.upstream_allowlist",
        fields={"upstream_allowlist": clean},
    )


@transaction.atomic
def workspace_set_default_baseten_secret(
    *, workspace: Workspace, secret: Secret | None, actor: str
) -> Workspace:
    """Set (or clear, with None) the secret of BASETEN targets that name none (staff only)."""
    if secret is not None and secret.workspace_id != workspace.id:
        raise ValidationFailed(
            "The default Baseten secret must be one of this workspace's secrets.",
            code="secret_not_found",
            param="default_baseten_secret",
        )
    # Cached routes carry the resolved credential.
    return _workspace_set(
        workspace=workspace,
        actor=actor,
        action="workspace.default_baseten_secret",
        fields={"default_baseten_secret": secret},
    )


@transaction.atomic
def workspace_set_onboarded(*, workspace: Workspace, onboarded: bool, actor: str) -> Workspace:
    """Onboard or off-board a workspace; off-boarded keys stop working at once."""
    return _workspace_set(
        workspace=workspace,
        actor=actor,
        action="workspace.onboard" if onboarded else "workspace.offboard",
        fields={"onboarded": onboarded},
    )


@transaction.atomic
def org_prefix_register(*, workspace: Workspace, prefix: str, actor: str) -> OrgPrefix:
    """Give a workspace an org prefix (globally unique)."""
    if not isinstance(prefix, str) or len(prefix) > 100 or not re.match(SEGMENT_RE, prefix):
        raise ValidationFailed(
            "prefix must match [a-z0-9][a-z0-9._-]* and be at most 100 characters",
            code="invalid_prefix",
            param="prefix",
        )
    if OrgPrefix.objects.filter(prefix=prefix).exists():
        raise ValidationFailed(
            f"{prefix!r} is already registered", code="prefix_taken", param="prefix"
        )
    org_prefix = OrgPrefix.objects.create(workspace=workspace, prefix=prefix)
    _name_audit(actor=actor, action="org_prefix.register", row=org_prefix, added=True)
    return org_prefix


@transaction.atomic
def org_prefix_delete(*, org_prefix: OrgPrefix, actor: str) -> None:
    """Release an org prefix (existing endpoints keep their slugs)."""
    org_prefix.delete()
    _name_audit(actor=actor, action="org_prefix.delete", row=org_prefix, added=False)


def _name_audit(*, actor: str, action: str, row: OrgPrefix | CustomDomain, added: bool) -> None:
    """Audit a workspace gaining or losing a globally unique name: an org prefix or a host."""
    kind, field = (
        ("org_prefix", "prefix") if isinstance(row, OrgPrefix) else ("custom_domain", "host")
    )
    snapshot = {field: getattr(row, field), "workspace": row.workspace_id}
    audit_record(
        actor=actor,
        action=action,
        obj_type=kind,
        obj_id=snapshot[field],
        workspace_id=row.workspace_id,
        before=None if added else snapshot,
        after=snapshot if added else None,
    )


def domain_host_check(host: Any) -> str:
    """A custom domain in the form Host headers are compared in (no port), else ValidationFailed."""
    value = host_normalize(host) if isinstance(host, str) and ":" not in host else ""
    if not _HOST_RE.match(value):
        raise ValidationFailed(
            "host must be a DNS name such as api.example.com", code="invalid_host", param="host"
        )
    return value


@transaction.atomic
def custom_domain_add(*, workspace: Workspace, host: str, actor: str) -> CustomDomain:
    """Bind a Host name to the workspace: traffic on it accepts only this workspace's keys."""
    host = domain_host_check(host)
    if CustomDomain.objects.filter(host=host).exists():
        raise ValidationFailed(f"{host} is already bound", code="host_taken", param="host")
    domain = CustomDomain.objects.create(workspace=workspace, host=host)
    _name_audit(actor=actor, action="custom_domain.add", row=domain, added=True)
    config_changed(workspace_id=workspace.id)
    return domain


@transaction.atomic
def custom_domain_delete(*, domain: CustomDomain, actor: str) -> None:
    """Unbind a Host name."""
    domain.delete()
    _name_audit(actor=actor, action="custom_domain.delete", row=domain, added=False)
    config_changed(workspace_id=domain.workspace_id)


def _secret_value_check(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationFailed(
            "value must be a non-empty string", code="invalid_secret_value", param="value"
        )
    return value


def _secret_snapshot(secret: Secret) -> dict[str, Any]:
    return {"id": secret.id, "name": secret.name, "workspace": secret.workspace_id}


@transaction.atomic
def secret_create(*, workspace: Workspace, name: str, value: str, actor: str) -> Secret:
    """Store a provider credential encrypted; the value is never shown again."""
    text_check(name, param="name", code="invalid_name", min_length=1, max_length=255)
    if Secret.objects.filter(workspace=workspace, name=name).exists():
        raise ValidationFailed(
            f"a secret named {name!r} exists", code="secret_name_taken", param="name"
        )
    secret = Secret.objects.create(
        workspace=workspace, name=name, ciphertext=encrypt(_secret_value_check(value))
    )
    audit_record(
        actor=actor,
        action="secret.create",
        obj_type="secret",
        obj_id=secret.id,
        workspace_id=workspace.id,
        after=_secret_snapshot(secret),
    )
    config_changed(workspace_id=workspace.id)
    return secret


@transaction.atomic
def secret_update(*, secret: Secret, value: str, actor: str) -> Secret:
    """Replace a credential's value (rotation)."""
    secret.ciphertext = encrypt(_secret_value_check(value))
    secret.save(update_fields=["ciphertext", "updated_at"])
    audit_record(
        actor=actor,
        action="secret.update",
        obj_type="secret",
        obj_id=secret.id,
        workspace_id=secret.workspace_id,
        before=_secret_snapshot(secret),
        after=_secret_snapshot(secret),
    )
    config_changed(workspace_id=secret.workspace_id)
    return secret


@transaction.atomic
def secret_delete(*, secret: Secret, actor: str) -> None:
    """Delete an unused credential (targets still using it PROTECT it)."""
    snapshot = _secret_snapshot(secret)
    secret.delete()
    audit_record(
        actor=actor,
        action="secret.delete",
        obj_type="secret",
        obj_id=snapshot["id"],
        workspace_id=snapshot["workspace"],
        before=snapshot,
    )
    config_changed(workspace_id=snapshot["workspace"])
