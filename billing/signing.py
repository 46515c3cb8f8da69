"""Standard Webhooks signing: `whsec_` secrets, `v1,<base64 HMAC-SHA256>`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def secret_generate() -> str:
    """A fresh signing secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret (its base64-decoded bytes; padding may be missing)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError("a webhook secret must be whsec_ followed by base64") from exc


def signature_compute(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` entry: HMAC-SHA256 of `{id}.{timestamp}.{body}` under the secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(*, secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one entry per active secret, newest first, space-separated."""
    return " ".join(
        signature_compute(secret=s, msg_id=msg_id, timestamp=timestamp, body=body) for s in secrets
    )


def signed_headers(
    *, secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Every header of one attempt: content type plus the three `webhook-*` headers."""
    if not secrets:
        raise ValueError("a webhook endpoint needs at least one active secret to sign with")
    return {
        "content-type": "application/json",
        "user-agent": "Gateway-Webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": signature_header(
            secrets=secrets, msg_id=msg_id, timestamp=timestamp, body=body
        ),
    }
