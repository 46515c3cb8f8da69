"""What the gateway refuses to start with: unsafe production settings, and a SECRET_KEY change that
would take the key pepper and the encryption key with it."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

SECRET_KEY_MIN_LENGTH = 50
SECRET_KEY_MIN_UNIQUE = 5
KEEP_KEYS_HINT = (
    "to change it without invalidating API keys and stored secrets, first set "
    "GATEWAY_KEY_PEPPER and GATEWAY_ENCRYPTION_KEY to its current value"
)


def production_problems(*, debug: bool, secret_key: str, allowed_hosts: list[str]) -> list[str]:
    """Each setting that is unsafe in production, in words an operator can act on."""
    problems = []
    if debug:
        problems.append("GATEWAY_DEBUG must be off")
    if not allowed_hosts or "*" in allowed_hosts:
        problems.append(
            "ALLOWED_HOSTS must list the gateway's own host names, not `*` "
            "(custom domains need not be listed: they serve inference only)"
        )
    if not secret_key:
        problems.append("SECRET_KEY must be set")
    weak = (
        len(secret_key) < SECRET_KEY_MIN_LENGTH
        or len(set(secret_key)) < SECRET_KEY_MIN_UNIQUE
        or secret_key.startswith("django-insecure-")
        or "not-for-production" in secret_key
    )
    if secret_key and weak:
        problems.append(
            f"SECRET_KEY must be a random value of at least {SECRET_KEY_MIN_LENGTH} characters "
            f"(e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'); {KEEP_KEYS_HINT}"
        )
    return problems


def production_check(*, debug: bool, secret_key: str, allowed_hosts: list[str]) -> None:
    """Raise ImproperlyConfigured listing every problem, so one restart fixes them all."""
    problems = production_problems(debug=debug, secret_key=secret_key, allowed_hosts=allowed_hosts)
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise ImproperlyConfigured(f"GATEWAY_PRODUCTION=1 refuses to start:\n{listed}")


def key_separation_check(
    *, secret_key: str, fallbacks: list[str], pepper: str, encryption_key: str
) -> None:
    """Refuse a SECRET_KEY change (SECRET_KEY_FALLBACKS set) while the pepper or the encryption
    key still follows SECRET_KEY: no API key would match, no stored secret would decrypt."""
    following = [
        name
        for name, value in (
            ("GATEWAY_KEY_PEPPER", pepper),
            ("GATEWAY_ENCRYPTION_KEY", encryption_key),
        )
        if value == secret_key
    ]
    if fallbacks and following:
        raise ImproperlyConfigured(
            f"SECRET_KEY_FALLBACKS is set (SECRET_KEY is changing) but {' and '.join(following)} "
            "still follow SECRET_KEY: set them to the previous SECRET_KEY value first"
        )
