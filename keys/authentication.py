"""Management-key authentication and scopes for the /v1/gateway/* API."""

from __future__ import annotations

import copy
import time
from datetime import timedelta
from typing import Any

from django.db.models import Model, Q
from django.db.models.signals import post_delete, post_save
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from gateway_project.kernel.errors import AuthenticationFailed, Forbidden
from groups.models import Workspace
from keys import selectors
from keys.hashing import key_hash
from keys.models import ApiKey, KeyScope, ManagementKey

SCHEMES = ("bearer", "api-key")
LAST_USED_RESOLUTION = timedelta(minutes=1)
WWW_AUTHENTICATE = 'Bearer realm="gateway"'
# How long a worker trusts a management key it verified without reading it again: a revoked key or
# an off-boarded workspace is refused by every worker within this (revocations promise one second).
VERIFIED_TTL_S = 0.5
VERIFIED_MAX = 1024


class VerifiedKeys:
    """Management keys this process verified in the last VERIFIED_TTL_S seconds, by the hash of the
    presented key (never the key itself). A key or workspace saved in this process clears it.

    Only what authentication decides on is kept: the key's row and its workspace's id and onboarded
    flag. A request gets its own copy, with a workspace whose other fields load from the database
    when read, so a setting staff just changed is never served from here."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, ManagementKey, bool]] = {}

    def get(self, digest: str) -> ManagementKey | None:
        """A private copy of the key verified under `digest`, if still fresh."""
        entry = self._entries.get(digest)
        if entry is None or time.monotonic() - entry[0] >= VERIFIED_TTL_S:
            return None
        _, cached, onboarded = entry
        key = copy.copy(cached)
        key.workspace = Workspace.from_db(
            cached._state.db, ["id", "onboarded"], [cached.workspace_id, onboarded]
        )
        return key

    def put(self, digest: str, key: ManagementKey, *, verified_at: float) -> None:
        if len(self._entries) >= VERIFIED_MAX:
            self._entries.clear()
        cached = copy.copy(key)
        cached._state = copy.copy(key._state)
        cached._state.fields_cache = {}  # not the workspace: get() makes a fresh one each time
        self._entries[digest] = (verified_at, cached, key.workspace.onboarded)

    def used(self, digest: str, key: ManagementKey) -> None:
        """Carry the recorded last use back to the cached key, so it is not written again."""
        entry = self._entries.get(digest)
        if entry is not None:
            entry[1].last_used_at = key.last_used_at

    def clear(self) -> None:
        self._entries.clear()


verified_keys = VerifiedKeys()


def _verified_keys_clear(sender: type[Model], **kwargs: Any) -> None:
    """A management key or a workspace changed: forget what this process verified (what another
    thread read before the change committed lives VERIFIED_TTL_S at most)."""
    verified_keys.clear()


for _model in (ManagementKey, Workspace):
    post_save.connect(_verified_keys_clear, sender=_model, dispatch_uid=f"verified-{_model}")
    post_delete.connect(_verified_keys_clear, sender=_model, dispatch_uid=f"verified-d-{_model}")


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
        digest = key_hash(key)
        management_key = verified_keys.get(digest)
        if management_key is None:
            management_key = self._verify(key, digest)
        last_used_touch(management_key)
        verified_keys.used(digest, management_key)
        return management_key, management_key

    def _verify(self, key: str, digest: str) -> ManagementKey:
        """The live management key `key` of an onboarded workspace, read from the database."""
        started = time.monotonic()
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
        verified_keys.put(digest, management_key, verified_at=started)
        return management_key

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
