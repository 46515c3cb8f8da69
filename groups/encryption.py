"""Symmetric encryption at rest for secrets (provider credentials, webhook signing secrets)."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


def _fernet() -> Fernet:
    digest = hashlib.sha256(b"gateway-secrets:" + settings.GATEWAY_ENCRYPTION_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(plaintext: str) -> bytes:
    """Encrypt a secret value for storage."""
    return _fernet().encrypt(plaintext.encode())


def decrypt(ciphertext: bytes | memoryview) -> str:
    """Decrypt a stored secret value; raises ValueError when the key does not match."""
    try:
        return _fernet().decrypt(bytes(ciphertext)).decode()
    except InvalidToken as exc:
        raise ValueError(
            "secret cannot be decrypted with the configured GATEWAY_ENCRYPTION_KEY"
        ) from exc
