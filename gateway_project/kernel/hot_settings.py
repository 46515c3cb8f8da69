"""The settings the inference path reads on every request, as plain attributes.

`django.conf.settings.X` runs LazyObject's Python-level attribute hook on every read (about half a
microsecond here), and a request reads some twenty of them. `hot.X` is the same value held on a
plain object: read from settings on first use and again whenever one of them changes
(override_settings and pytest-django's `settings` fixture send `setting_changed`).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed


class HotSettings:
    """One attribute per setting below, with the settings' value, and the pepper as bytes."""

    GATEWAY_CIRCUIT_STATE_TTL: float
    GATEWAY_DEFAULT_MAX_TOKENS: int
    GATEWAY_KEY_CACHE_TTL: float
    GATEWAY_KEY_PEPPER: str
    GATEWAY_LIMITS_FAIL_OPEN: bool
    GATEWAY_LIMITS_TIMEOUT: float
    GATEWAY_MAX_BODY_BYTES: int
    GATEWAY_MAX_METADATA_BYTES: int
    GATEWAY_MAX_TOKENS_CEILING: int
    GATEWAY_MAX_UPSTREAM_BODY_BYTES: int
    GATEWAY_MAX_UPSTREAM_EVENT_BYTES: int
    GATEWAY_MEDIA_PART_TOKENS: int
    GATEWAY_UNKNOWN_KEY_CACHE_TTL: float
    GATEWAY_UPSTREAM_ALLOWLIST: list[str]
    GATEWAY_UPSTREAM_FALLBACK_FIRST_BYTE_TIMEOUT: float
    GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT: float
    GATEWAY_UPSTREAM_IDLE_TIMEOUT: float
    GATEWAY_USAGE_RECORD_TIMEOUT: float
    pepper: bytes  # GATEWAY_KEY_PEPPER as UTF-8

    def __getattr__(self, name: str) -> Any:
        # Only for an attribute not yet set: the first read loads them all.
        if name not in _FIELDS:
            raise AttributeError(name)
        hot_load()
        return object.__getattribute__(self, name)


_FIELDS = frozenset(HotSettings.__annotations__)
NAMES = tuple(name for name in HotSettings.__annotations__ if name != "pepper")
hot = HotSettings()


def hot_load(**_: Any) -> None:
    """Read every name from settings again."""
    for name in NAMES:
        setattr(hot, name, getattr(settings, name))
    hot.pepper = settings.GATEWAY_KEY_PEPPER.encode()


def _changed(*, setting: str, **_: Any) -> None:
    if setting in NAMES:
        hot_load()


setting_changed.connect(_changed, dispatch_uid="gateway_project.kernel.hot_settings")
