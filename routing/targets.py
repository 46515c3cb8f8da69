"""Per-provider target rules: which fields belong, their checks, and upstream URLs."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from gateway_project.kernel import netguard
from gateway_project.kernel.encryption import decrypt
from gateway_project.kernel.errors import ValidationFailed
from groups.models import Secret, Workspace
from routing.models import Provider, Target
from routing.pricing import Pricing

# Per provider: required fields, optional fields (with their default, None = stays empty).
PROVIDER_FIELDS: dict[str, tuple[tuple[str, ...], dict[str, str | None]]] = {
    Provider.BASETEN: (("model_id",), {"environment_name": "production", "secret_id": None}),
    Provider.OPENAI_COMPATIBLE: (("base_url", "target_model"), {"secret_id": None}),
    Provider.OPENAI: (("target_model", "secret_id"), {}),
}
# model_id lands in a host name and environment_name in a path: keep them to safe characters.
FIELD_PATTERNS = {
    "model_id": re.compile(r"^[A-Za-z0-9-]{1,63}$"),
    "environment_name": re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$"),
}
FIELD_MAX_LENGTH = {"base_url": 2048}
DEFAULT_MAX_LENGTH = 255
BASETEN_UPSTREAM_MODEL = "model"


@dataclass(frozen=True)
class ResolvedTarget:
    """One upstream as the proxy calls it."""

    position: int
    provider: str
    base_url: str
    upstream_model: str
    api_key: str | None
    # The workspace's own allowlist, checked again at connect time; None: the global default.
    allowlist: tuple[str, ...] | None = None
    # A BASETEN target naming no secret while its workspace has no default one: never called.
    credential_missing: bool = False


@dataclass(frozen=True)
class ResolvedEndpoint:
    """A live endpoint with its ordered, fully resolved targets."""

    endpoint_id: str
    workspace_id: str
    slug: str
    region: str
    targets: tuple[ResolvedTarget, ...]
    pricing: Pricing | None = None


def _invalid(message: str, param: str) -> ValidationFailed:
    return ValidationFailed(message, code="invalid_target", param=param)


def _field_check(name: str, value: Any, param: str) -> str:
    limit = FIELD_MAX_LENGTH.get(name, DEFAULT_MAX_LENGTH)
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise _invalid(f"{param} must be a non-empty string of at most {limit} characters.", param)
    pattern = FIELD_PATTERNS.get(name)
    if pattern is not None and not pattern.match(value):
        raise _invalid(f"{param} contains characters that are not allowed.", param)
    return value.strip()


def _base_url_check(value: str, param: str, allowlist: list[str]) -> str:
    parts = urlsplit(value)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise _invalid(f"{param} must not carry credentials, a query or a fragment.", param)
    try:
        netguard.url_check(url=value, allowlist=allowlist)
    except ValidationFailed as exc:
        raise ValidationFailed(exc.message, code=exc.code, param=param) from exc
    return value.rstrip("/")


def target_clean(raw: Any, *, index: int, allowlist: list[str]) -> dict[str, str]:
    """One target's fields checked against its provider's rules (secret ownership aside); a
    base_url must pass the SSRF guard with the workspace's `allowlist`."""
    param = f"targets[{index}]"
    if not isinstance(raw, Mapping):
        raise _invalid(f"{param} must be an object.", param)
    provider = raw.get("provider")
    if provider not in PROVIDER_FIELDS:
        raise _invalid(
            f"{param}.provider must be one of {', '.join(Provider.values)}.", f"{param}.provider"
        )
    required, optional = PROVIDER_FIELDS[provider]
    for name in raw:
        if name != "provider" and name not in required and name not in optional:
            raise _invalid(
                f"{param}.{name} does not belong to a {provider} target.", f"{param}.{name}"
            )
    clean = {"provider": str(provider)}
    for name in (*required, *optional):
        value = raw.get(name)
        if value is None:
            if name in required:
                raise _invalid(
                    f"{param}.{name} is required for a {provider} target.", f"{param}.{name}"
                )
            value = optional[name]
        if value is not None:
            clean[name] = _field_check(name, value, f"{param}.{name}")
    if "base_url" in clean:
        clean["base_url"] = _base_url_check(clean["base_url"], f"{param}.base_url", allowlist)
    return clean


def targets_clean(*, workspace: Workspace, targets: Any) -> list[dict[str, str]]:
    """The whole list checked: 1..GATEWAY_MAX_TARGETS targets, secrets owned by the workspace."""
    if not isinstance(targets, list):
        raise _invalid("targets must be a list.", "targets")
    if not targets:
        raise ValidationFailed(
            "At least one target is required.", code="targets_required", param="targets"
        )
    if len(targets) > settings.GATEWAY_MAX_TARGETS:
        raise ValidationFailed(
            f"At most {settings.GATEWAY_MAX_TARGETS} targets are allowed.",
            code="too_many_targets",
            param="targets",
        )
    allowlist = netguard.allowlist_effective(workspace)
    cleaned = [target_clean(raw, index=i, allowlist=allowlist) for i, raw in enumerate(targets)]
    _secrets_check(workspace=workspace, cleaned=cleaned)
    return cleaned


def default_secret_missing(*, param: str) -> ValidationFailed:
    """400 for a BASETEN target without secret_id in a workspace without a default secret."""
    return ValidationFailed(
        f"{param} is a BASETEN target without secret_id and this workspace has no default "
        "Baseten secret: pass the secret_id of one of the workspace's secrets, or have the "
        "gateway's staff set the workspace's default Baseten secret in the admin.",
        code="default_secret_missing",
        param=f"{param}.secret_id",
    )


def _secrets_check(*, workspace: Workspace, cleaned: list[dict[str, str]]) -> None:
    defaulted = [
        index
        for index, t in enumerate(cleaned)
        if t["provider"] == Provider.BASETEN and "secret_id" not in t
    ]
    # Read afresh: staff may have changed the default since the caller loaded the workspace.
    if defaulted and not (
        Workspace.objects.filter(pk=workspace.pk, default_baseten_secret__isnull=False).exists()
    ):
        raise default_secret_missing(param=f"targets[{defaulted[0]}]")
    wanted = {t["secret_id"] for t in cleaned if "secret_id" in t}
    owned = set(
        Secret.objects.filter(workspace=workspace, id__in=wanted).values_list("id", flat=True)
    )
    for index, target in enumerate(cleaned):
        if "secret_id" in target and target["secret_id"] not in owned:
            raise ValidationFailed(
                f"No secret {target['secret_id']!r} in this workspace.",
                code="secret_not_found",
                param=f"targets[{index}].secret_id",
            )


def target_rows(*, endpoint_id: str, cleaned: Iterable[dict[str, str]]) -> list[Target]:
    """Unsaved Target rows in priority order."""
    return [
        Target(
            endpoint_id=endpoint_id,
            position=position,
            provider=t["provider"],
            model_id=t.get("model_id", ""),
            environment_name=t.get("environment_name", ""),
            base_url=t.get("base_url", ""),
            target_model=t.get("target_model", ""),
            secret_id=t.get("secret_id"),
        )
        for position, t in enumerate(cleaned)
    ]


def target_wire(target: Target) -> dict[str, Any]:
    """The API shape of a stored target: only its provider's fields."""
    required, optional = PROVIDER_FIELDS[target.provider]
    wire: dict[str, Any] = {"provider": target.provider}
    for name in (*required, *optional):
        wire[name] = target.secret_id if name == "secret_id" else getattr(target, name) or None
    return wire


def target_base_url(target: Target) -> str:
    """The upstream base URL; the proxy appends the OpenAI path (/chat/completions...)."""
    if target.provider == Provider.BASETEN:
        return str(settings.GATEWAY_BASETEN_URL_TEMPLATE).format(
            model_id=target.model_id, environment_name=target.environment_name or "production"
        )
    if target.provider == Provider.OPENAI:
        return str(settings.GATEWAY_OPENAI_BASE_URL).rstrip("/")
    return target.base_url.rstrip("/")


def target_resolve(target: Target, *, workspace: Workspace) -> ResolvedTarget:
    """A stored target (secret loaded) as the proxy calls it, with its workspace's allowlist."""
    upstream_model = target.target_model
    if target.provider == Provider.BASETEN and not upstream_model:
        upstream_model = BASETEN_UPSTREAM_MODEL
    secret = target.secret
    defaulted = target.provider == Provider.BASETEN and secret is None
    if defaulted:
        secret = workspace.default_baseten_secret
    own = workspace.upstream_allowlist
    return ResolvedTarget(
        position=target.position,
        provider=target.provider,
        base_url=target_base_url(target),
        upstream_model=upstream_model,
        api_key=decrypt(secret.ciphertext) if secret is not None else None,
        allowlist=None if own is None else tuple(own),
        credential_missing=defaulted and secret is None,
    )
