"""Fixtures shared by every suite: the embedded/real Redis, workspaces, keys."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings


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
