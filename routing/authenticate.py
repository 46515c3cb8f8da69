"""The first step of an inference request: who is calling, from its API key."""

from __future__ import annotations

import time

from gateway_project.kernel.errors import AuthenticationFailed
from gateway_project.kernel.hosts import host_normalize
from keys.selectors import key_hash, key_well_formed
from routing.activity import key_use_note
from routing.authcache import KeyEntry, domain_workspace, key_lookup

_AUTH_SCHEMES = ("bearer ", "api-key ")


async def request_authenticate(headers: dict[str, str]) -> KeyEntry:
    """The key entry of the request's `Authorization` header; 401 for any key that may not call."""
    value = headers.get("authorization", "")
    plaintext = next(
        (value[len(s) :].strip() for s in _AUTH_SCHEMES if value.lower().startswith(s)), ""
    )
    if not plaintext:
        raise AuthenticationFailed("Missing API key: send Authorization: Bearer <key>.")
    # Malformed keys stop here: no hashing, no cache slot, no database round trip.
    if not key_well_formed(plaintext):
        raise AuthenticationFailed("Invalid API key.")
    entry = await key_lookup(plaintext=plaintext, key_hash=key_hash(plaintext))
    if entry is None or not entry.onboarded:
        raise AuthenticationFailed("Invalid API key.")
    owner = await domain_workspace(host=host_normalize(headers.get("host", "")))
    if owner is not None and owner != entry.workspace_id:
        raise AuthenticationFailed("Invalid API key.")
    if entry.expires_at is not None and time.time() >= entry.expires_at:
        raise AuthenticationFailed("This API key has expired.")
    key_use_note(entry.key_prefix)
    return entry
