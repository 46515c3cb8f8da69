"""Key material: minting, hashing (HMAC-SHA256 with a server pepper) and constant-time checks."""

from __future__ import annotations

import hmac
import re
import secrets
import string

from gateway_project.kernel.hot_settings import hot

BASE62 = string.digits + string.ascii_letters
FEDERATED_PREFIX = "sky_"
MANAGEMENT_PREFIX = "gwm_"
PREFIX_LENGTH = 16
SECRET_LENGTH = 40
MAX_PRESENTED_LENGTH = 256
_FEDERATED_SHAPE = re.compile(
    rf"{FEDERATED_PREFIX}[0-9A-Za-z]{{{PREFIX_LENGTH - len(FEDERATED_PREFIX)}}}"
    rf"[0-9A-Za-z._-]{{1,{MAX_PRESENTED_LENGTH - PREFIX_LENGTH}}}"
)
# A registered key: `prefix.secret`; the prefix (before the first dot) is the public part.
REGISTERED_PREFIX_MIN_LENGTH = 4
REGISTERED_PREFIX = re.compile(rf"[A-Za-z0-9_-]{{{REGISTERED_PREFIX_MIN_LENGTH},{PREFIX_LENGTH}}}")
_REGISTERED_SHAPE = re.compile(
    rf"(?!{MANAGEMENT_PREFIX}){REGISTERED_PREFIX.pattern}"
    rf"\.[!-~]{{1,{MAX_PRESENTED_LENGTH - PREFIX_LENGTH - 1}}}"
)


def random_base62(length: int) -> str:
    """`length` characters drawn uniformly from [0-9A-Za-z] by the OS CSPRNG."""
    return "".join(secrets.choice(BASE62) for _ in range(length))


def mint(kind_prefix: str) -> tuple[str, str]:
    """A new key `prefix.secret` and its 16-char prefix (kind marker + 12 base62)."""
    prefix = kind_prefix + random_base62(PREFIX_LENGTH - len(kind_prefix))
    return f"{prefix}.{random_base62(SECRET_LENGTH)}", prefix


def key_hash(plaintext: str) -> str:
    """HMAC-SHA256 of the whole key under the pepper, hex; the only thing stored."""
    return hmac.digest(hot.pepper, plaintext.encode(), "sha256").hex()


def key_matches(plaintext: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented key against a stored hash."""
    return hmac.compare_digest(key_hash(plaintext), stored_hash)


def key_prefix(plaintext: str) -> str:
    """The public part of a key: what precedes its first dot (all of a minted key's `sky_…`)."""
    return plaintext.split(".", 1)[0]


def key_well_formed(plaintext: str) -> bool:
    """Whether `plaintext` could be a federated key at all (checked before any lookup)."""
    return (
        _FEDERATED_SHAPE.fullmatch(plaintext) is not None
        or _REGISTERED_SHAPE.fullmatch(plaintext) is not None
    )
