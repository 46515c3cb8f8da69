"""Fixtures shared by every suite: the embedded/real Redis, workspaces, keys."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from django.conf import settings

if TYPE_CHECKING:
    from groups.models import Workspace


@pytest.fixture(scope="session", autouse=True)
def redis_server() -> Iterator[str]:
    """Start the embedded redis-server when REDIS_URL is unset (the local default)."""
    if settings.REDIS_EMBEDDED:
        from gateway_project import embedded_redis

        embedded_redis.start()
    yield settings.REDIS_URL


@pytest.fixture(autouse=True)
def _clean_redis(redis_server: str) -> Iterator[None]:
    """Every test starts with an empty Redis database (tests use their own db number in CI)."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    yield
    client.close()


@pytest.fixture
def workspace(db: None) -> Workspace:
    """An onboarded workspace owning the org prefix `acme`."""
    from groups.models import OrgPrefix, Workspace

    ws = Workspace.objects.create(name="Acme Labs", onboarded=True)
    OrgPrefix.objects.create(workspace=ws, prefix="acme")
    return ws


@pytest.fixture
def other_workspace(db: None) -> Workspace:
    """A second onboarded tenant owning the org prefix `globex`."""
    from groups.models import OrgPrefix, Workspace

    ws = Workspace.objects.create(name="Globex", onboarded=True)
    OrgPrefix.objects.create(workspace=ws, prefix="globex")
    return ws


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    """Admin logins in tests do not need a slow password hash."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
