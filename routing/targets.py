"""Per-provider target rules: which fields belong, their checks, and upstream URLs."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
WEIGHT_MIN, WEIGHT_MAX = 1, 1000
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
    weight: int = 1
    # The name of this upstream's circuit breaker (target_circuit).
    circuit: str = field(default="", compare=False)


@dataclass(frozen=True)
class ResolvedEndpoint:
    """A live endpoint with its ordered, fully resolved targets."""

    endpoint_id: str
    workspace_id: str
    slug: str
    region: str
    targets: tuple[ResolvedTarget, ...]
    strategy: str = "PRIORITY"
    # Seconds to the first byte set on the endpoint itself; None: the settings' rule.
    first_byte_timeout: float | None = None
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


def _weight_check(value: Any, param: str) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not WEIGHT_MIN <= value <= WEIGHT_MAX
    ):
        raise _invalid(f"{param} must be an integer from {WEIGHT_MIN} to {WEIGHT_MAX}.", param)
    return int(value)


def target_clean(raw: Any, *, index: int, allowlist: list[str]) -> dict[str, Any]:
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
        if name not in ("provider", "weight") and name not in required and name not in optional:
            raise _invalid(
                f"{param}.{name} does not belong to a {provider} target.", f"{param}.{name}"
            )
    clean: dict[str, Any] = {"provider": str(provider)}
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
    if raw.get("weight") is not None:
        clean["weight"] = _weight_check(raw["weight"], f"{param}.weight")
    return clean


def targets_clean(*, workspace: Workspace, targets: Any) -> list[dict[str, Any]]:
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


def _secrets_check(*, workspace: Workspace, cleaned: list[dict[str, Any]]) -> None:
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


def target_rows(*, endpoint_id: str, cleaned: Iterable[dict[str, Any]]) -> list[Target]:
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
            weight=t.get("weight", 1),
        )
        for position, t in enumerate(cleaned)
    ]


def target_wire(target: Target) -> dict[str, Any]:
    """The API shape of a stored target: only its provider's fields."""
    required, optional = PROVIDER_FIELDS[target.provider]
    wire: dict[str, Any] = {"provider": target.provider}
    for name in (*required, *optional):
        wire[name] = target.secret_id if name == "secret_id" else getattr(target, name) or None
    wire["weight"] = target.weight
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


def _upstream_model(target: Target) -> str:
    if target.provider == Provider.BASETEN and not target.target_model:
        return BASETEN_UPSTREAM_MODEL
    return target.target_model


def target_circuit(target: Target) -> str:
    """The name of a target's circuit breaker: its endpoint, position and where it points, so a
    replaced target starts with a closed breaker."""
    where = f"{target.provider} {target_base_url(target)} {_upstream_model(target)}".encode()
    return f"{target.endpoint_id}:{target.position}:{hashlib.sha256(where).hexdigest()[:12]}"


def target_resolve(target: Target, *, workspace: Workspace) -> ResolvedTarget:
    """A stored target (secret loaded) as the proxy calls it, with its workspace's allowlist."""
    secret = target.secret
    defaulted = target.provider == Provider.BASETEN and secret is None
    if defaulted:
        secret = workspace.default_baseten_secret
    own = workspace.upstream_allowlist
    return ResolvedTarget(
        position=target.position,
        provider=target.provider,
        base_url=target_base_url(target),
        upstream_model=_upstream_model(target),
        api_key=decrypt(secret.ciphertext) if secret is not None else None,
        allowlist=None if own is None else tuple(own),
        credential_missing=defaulted and secret is None,
        weight=target.weight,
        circuit=target_circuit(target),
    )
