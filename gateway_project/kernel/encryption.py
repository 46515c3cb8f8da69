"""Symmetric encryption at rest for secrets (provider credentials, webhook signing secrets).

New values are encrypted under GATEWAY_ENCRYPTION_KEY; values stored under one of
GATEWAY_ENCRYPTION_KEYS_PREVIOUS still decrypt, and `manage.py secrets_reencrypt` moves them to the
current key so the previous ones can be dropped.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db.models import QuerySet


def _fernet(key: str) -> Fernet:
    digest = hashlib.sha256(b"gateway-secrets:" + key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _current() -> Fernet:
    return _fernet(settings.GATEWAY_ENCRYPTION_KEY)


def _all_keys() -> MultiFernet:
    previous = [_fernet(key) for key in settings.GATEWAY_ENCRYPTION_KEYS_PREVIOUS]
    return MultiFernet([_current(), *previous])


def encrypt(plaintext: str) -> bytes:
    """Encrypt a secret value for storage (under the current key)."""
    return _current().encrypt(plaintext.encode())


def decrypt(ciphertext: bytes | memoryview) -> str:
    """Decrypt a stored secret value; raises ValueError when no configured key matches."""
    try:
        return _all_keys().decrypt(bytes(ciphertext)).decode()
    except InvalidToken as exc:
        raise ValueError(
            "secret cannot be decrypted with GATEWAY_ENCRYPTION_KEY or any of "
            "GATEWAY_ENCRYPTION_KEYS_PREVIOUS"
        ) from exc


@dataclass(frozen=True)
class Reencrypted:
    """What one pass of `ciphertexts_reencrypt` did."""

    reencrypted: int
    current: int
    undecryptable: list[str]


def ciphertexts_reencrypt(*, rows: QuerySet[Any]) -> Reencrypted:
    """Re-encrypt under the current key each row's `ciphertext` that is under a previous key.

    Call inside a transaction: rows are locked, and a caller seeing `undecryptable` rolls back.
    """
    current, every = _current(), _all_keys()
    moved, unchanged, broken = 0, 0, []
    for pk, ciphertext in rows.select_for_update().order_by("pk").values_list("pk", "ciphertext"):
        token = bytes(ciphertext)
        try:
            current.decrypt(token)
            unchanged += 1
            continue
        except InvalidToken:
            pass
        try:
            fresh = every.rotate(token)
        except InvalidToken:
            broken.append(str(pk))
            continue
        # update(), not save(): a re-encryption is not an edit (updated_at stays as it was).
        rows.model._default_manager.filter(pk=pk).update(ciphertext=fresh)
        moved += 1
    return Reencrypted(reencrypted=moved, current=unchanged, undecryptable=broken)
