"""What the gateway refuses to start with when GATEWAY_PRODUCTION=1."""

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
