"""The settings the inference path reads per request follow every change of settings."""

from __future__ import annotations

import hmac
from typing import Any

from django.conf import settings
from django.test import override_settings

from gateway_project.kernel.hot_settings import NAMES, hot
from keys.hashing import key_hash


def test_every_name_holds_the_settings_value() -> None:
    for name in NAMES:
        assert getattr(hot, name) == getattr(settings, name), name
    assert hot.pepper == settings.GATEWAY_KEY_PEPPER.encode()


def test_an_override_is_seen_at_once_and_undone_after() -> None:
    before = hot.GATEWAY_MAX_BODY_BYTES
    with override_settings(GATEWAY_MAX_BODY_BYTES=before + 7):
        assert hot.GATEWAY_MAX_BODY_BYTES == before + 7
    assert hot.GATEWAY_MAX_BODY_BYTES == before


def test_a_key_hash_follows_a_changed_pepper() -> None:
    with override_settings(GATEWAY_KEY_PEPPER="another-pepper"):
        changed = key_hash("sky_abc.def")
    expected = hmac.new(b"another-pepper", b"sky_abc.def", "sha256").hexdigest()
    assert changed == expected
    assert key_hash("sky_abc.def") != expected


def test_the_pytest_settings_fixture_is_seen_too(settings: Any) -> None:
    settings.GATEWAY_CIRCUIT_STATE_TTL = 42.5
    assert hot.GATEWAY_CIRCUIT_STATE_TTL == 42.5
