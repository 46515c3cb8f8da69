"""Management-key authentication and scopes for the /v1/gateway/* API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from gateway_project.kernel.errors import AuthenticationFailed, Forbidden
from keys import selectors
from keys.hashing import key_hash
from keys.models import ApiKey, KeyScope, ManagementKey

SCHEMES = ("bearer", "api-key")
LAST_USED_RESOLUTION = timedelta(minutes=1)
WWW_AUTHENTICATE = 'Bearer realm="gateway"'


def presented_key(request: Request) -> str:
    """The key of `Authorization: Bearer <key>` or `Authorization: Api-Key <key>`."""
    header: str = request.META.get("HTTP_AUTHORIZATION", "").strip()
    if not header:
        raise AuthenticationFailed(
            "Missing management key: send `Authorization: Bearer <key>`.",
            code="missing_api_key",
            headers={"WWW-Authenticate": WWW_AUTHENTICATE},
        )
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() not in SCHEMES or not key or "\x00" in key:
        raise _invalid_key()
    return key


def _invalid_key() -> AuthenticationFailed:
    return AuthenticationFailed(
        "Invalid management key.",
        code="invalid_api_key",
        headers={"WWW-Authenticate": WWW_AUTHENTICATE},
    )


def _is_federated_key(key: str) -> bool:
    """A customer key (live or revoked): it exists among the federated keys' hashes."""
    return ApiKey.objects.filter(key_hash=key_hash(key)).exists()


def last_used_touch(key: ManagementKey) -> None:
    """Record use at most once a minute, so reads do not write on every request."""
    now = timezone.now()
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_RESOLUTION:
        return
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ManagementKey.objects.filter(stale, pk=key.pk).update(last_used_at=now)
    key.last_used_at = now


class ManagementKeyAuthentication(BaseAuthentication):
    """`Bearer`/`Api-Key` management keys; the workspace must be onboarded."""

    def authenticate(self, request: Request) -> tuple[ManagementKey, ManagementKey]:
        key = presented_key(request)
        management_key = selectors.management_key_authenticate(plaintext=key)
        if management_key is None:
            if _is_federated_key(key):
                raise Forbidden(
                    "A federated API key cannot call the management API; use a management key.",
                    code="federated_key_not_allowed",
                )
            raise _invalid_key()
        if not management_key.workspace.onboarded:
            raise Forbidden("This workspace is not onboarded yet.", code="workspace_not_onboarded")
        last_used_touch(management_key)
        return management_key, management_key

    def authenticate_header(self, request: Request) -> str:
        return WWW_AUTHENTICATE


class ManagementScope(BasePermission):
    """MANAGE keys may do anything; VIEW keys may only read."""

    def has_permission(self, request: Request, view: Any) -> bool:
        key = request.auth
        if not isinstance(key, ManagementKey):
            raise _invalid_key()
        if key.scope != KeyScope.MANAGE and request.method not in SAFE_METHODS:
            raise Forbidden(
                "This management key has the VIEW scope: it may only read.",
                code="insufficient_scope",
            )
        return True


class ManagementKeyScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """Documents management keys as HTTP bearer auth (`Api-Key <key>` works as well)."""

    target_class = "keys.authentication.ManagementKeyAuthentication"
    name = "managementKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "A workspace management key."}
