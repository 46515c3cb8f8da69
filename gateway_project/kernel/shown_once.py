"""Secrets shown once after a redirect: the POST that mints one stores it here (encrypted, for a
few minutes, for that staff user only) and redirects; the page that shows it takes it out, so a
reload shows "already shown" instead of minting again.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from django.core.cache import cache

from gateway_project.kernel.encryption import decrypt, encrypt

TTL_SECONDS = 300


def _key(token: str) -> str:
    return f"gw:admin:shown-once:{token}"


def shown_once_put(*, user_id: int | None, payload: dict[str, Any]) -> str:
    """Keep `payload` for one showing to `user_id`; returns the token for the redirect's URL."""
    token = secrets.token_urlsafe(24)
    sealed = encrypt(json.dumps({"user": user_id, "payload": payload}))
    cache.set(_key(token), sealed, timeout=TTL_SECONDS)
    return token


def shown_once_take(*, user_id: int | None, token: str) -> dict[str, Any] | None:
    """The payload behind `token`, removed as it is read; None once shown, expired or not theirs."""
    if user_id is None or not token or len(token) > 64:
        return None
    sealed = cache.get(_key(token))
    if sealed is None:
        return None
    opened = json.loads(decrypt(sealed))
    if opened["user"] != user_id:
        return None
    cache.delete(_key(token))
    payload: dict[str, Any] = opened["payload"]
    return payload
