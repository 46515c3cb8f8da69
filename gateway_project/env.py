"""Typed readers for environment variables; the only place settings come from."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from gateway_project.privatefile import private_file_write

BASE_DIR = Path(__file__).resolve().parent.parent


def var_dir() -> Path:
    """Directory for local state (SQLite file, embedded Redis, generated secret key)."""
    path = Path(os.environ.get("GATEWAY_VAR_DIR", BASE_DIR / "var"))
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def env_str(name: str, default: str) -> str:
    """A string variable, or the default when unset or empty."""
    return os.environ.get(name) or default


def env_int(name: str, default: int) -> int:
    """An integer variable; a malformed value is a startup error, not a silent default."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def env_float(name: str, default: float) -> float:
    """A float variable."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def env_bool(name: str, default: bool) -> bool:
    """A boolean variable: 1/true/yes/on or 0/false/no/off."""
    raw = os.environ.get(name)
    if not raw:
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name} must be a boolean, got {raw!r}")


def env_list(name: str, default: list[str]) -> list[str]:
    """A comma-separated list."""
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_header(name: str) -> tuple[str, str] | None:
    """A request header and the value it must have, `X-Forwarded-Proto` or `X-Forwarded-Ssl: on`
    (value `https` when omitted), in Django's META form: ("HTTP_X_FORWARDED_PROTO", "https")."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    header, _, value = raw.partition(":")
    header = header.strip()
    if not header or not all(c.isalnum() or c == "-" for c in header):
        raise ValueError(f"{name} must look like X-Forwarded-Proto or X-Forwarded-Ssl: on")
    return "HTTP_" + header.upper().replace("-", "_"), value.strip() or "https"


def secret_key(*, generate: bool) -> str:
    """SECRET_KEY from the environment, else generated once into var/ (mode 0600) for local use,
    else empty (production refuses to start then)."""
    value = os.environ.get("SECRET_KEY")
    if value or not generate:
        return value or ""
    path = var_dir() / "secret_key"
    if not path.exists():
        private_file_write(path, secrets.token_urlsafe(50), replace=False)
    return path.read_text().strip()


def shutdown_timeout() -> float:
    """GATEWAY_SHUTDOWN_TIMEOUT: seconds a node drains in-flight requests after SIGTERM."""
    return env_float("GATEWAY_SHUTDOWN_TIMEOUT", 25.0)


def embedded_redis_url() -> str:
    """The URL of the project's embedded redis-server (see gateway_project.embedded_redis)."""
    return f"unix://{var_dir() / 'redis.sock'}"
