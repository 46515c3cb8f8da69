"""A fresh database and a private Redis per deployment test, as a new installation has."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.faults.processes import PrivateRedis


@pytest.fixture
def database_url() -> Iterator[str]:
    """A new, empty database on the suite's PostgreSQL (what compose's postgres service gives)."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        pytest.skip("needs PostgreSQL: run with DATABASE_URL=postgres://... (make test does in CI)")
    base, _, name = url.rpartition("/")
    fresh = f"{name}_compose"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{fresh}"')
    yield f"{base}/{fresh}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """An append-only Redis of its own (what compose's redis service gives)."""
    redis = PrivateRedis(tmp_path).start()
    yield redis.url
    redis.kill()
