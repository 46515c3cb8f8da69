"""Reads of keys: authentication of presented keys and per-group listings."""

from __future__ import annotations

from django.db.models import QuerySet

from gateway_project.kernel.errors import NotFound
from groups.models import Group
from keys.hashing import PREFIX_LENGTH, key_matches, key_prefix
from keys.hashing import key_hash as key_hash
from keys.hashing import key_well_formed as key_well_formed
from keys.models import ApiKey, ManagementKey

MAX_PRESENTED_LENGTH = 256


def _plausible(plaintext: object) -> bool:
    return isinstance(plaintext, str) and PREFIX_LENGTH < len(plaintext) <= MAX_PRESENTED_LENGTH


def management_key_authenticate(*, plaintext: str) -> ManagementKey | None:
    """The live management key matching the presented plaintext (onboarding is the caller's 403)."""
    if not _plausible(plaintext):
        return None
    key = (
        ManagementKey.objects.select_related("workspace")
        .filter(prefix=key_prefix(plaintext), revoked_at__isnull=True)
        .first()
    )
    if key is None or not key_matches(plaintext, key.key_hash):
        return None
    return key


def api_key_resolve(*, plaintext: str) -> ApiKey | None:
    """The live key of a live group in an onboarded workspace matching the plaintext.

    Found by its peppered hash, not by its prefix: keys registered before the prefix became the
    part before the dot carry an opaque prefix that the presented key does not start with."""
    if not _plausible(plaintext):
        return None
    key = (
        ApiKey.objects.select_related("group", "workspace")
        .filter(
            key_hash=key_hash(plaintext),
            revoked_at__isnull=True,
            group__deleted_at__isnull=True,
            workspace__onboarded=True,
        )
        .first()
    )
    if key is None or not key_matches(plaintext, key.key_hash):
        return None
    return key


def api_key_list(*, group: Group) -> QuerySet[ApiKey]:
    """The group's live keys in creation order."""
    return ApiKey.objects.filter(group=group, revoked_at__isnull=True).order_by("created_at", "id")


def api_key_get(*, group: Group, prefix: str) -> ApiKey:
    """One live key of the group, else NotFound."""
    key = api_key_list(group=group).filter(prefix=prefix).first()
    if key is None:
        raise NotFound("No such API key.", code="key_not_found")
    return key
