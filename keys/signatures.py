"""Ed25519 signatures over key-registration bodies."""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from gateway_project.kernel.errors import ValidationFailed
from groups.models import Workspace

SIGNATURE_HEADER = "X-Signature"


def _invalid(message: str) -> ValidationFailed:
    return ValidationFailed(message, code="invalid_signature", param=SIGNATURE_HEADER)


def _b64decode(value: str) -> bytes:
    text = value.strip()
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def ed25519_public_key_load(text: str) -> Ed25519PublicKey:
    """Parse a workspace public key: base64 of the raw 32 bytes, or a PEM SubjectPublicKeyInfo."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the PEM key is not an Ed25519 public key")
        return key
    raw = _b64decode(text)
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def registration_signature_verify(
    *, workspace: Workspace, body: bytes, signature: str | None
) -> None:
    """Raise ValidationFailed(code="invalid_signature") unless `signature` signs `body` exactly."""
    if not workspace.ed25519_public_key.strip():
        raise _invalid("The workspace has no Ed25519 public key for key registration.")
    if not signature:
        raise _invalid(f"The {SIGNATURE_HEADER} header is required.")
    try:
        public_key = ed25519_public_key_load(workspace.ed25519_public_key)
    except (ValueError, UnsupportedAlgorithm, binascii.Error) as exc:
        raise _invalid("The workspace's Ed25519 public key cannot be parsed.") from exc
    try:
        public_key.verify(_b64decode(signature), body)
    except (InvalidSignature, ValueError, binascii.Error) as exc:
        raise _invalid("The request signature does not verify.") from exc
