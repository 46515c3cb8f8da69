"""A fresh database and a private Redis per deployment test, as a new installation has."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.faults.processes import PrivateRedis
from tests.tooling import suite_requires


def image_tools_missing() -> str | None:
    """One line saying what the image tests lack, or None."""
    missing = [tool for tool in ("podman", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        return (
            f"{' and '.join(missing)} missing: `make test-deploy` installs them where apt-get and "
            "root or sudo are available; otherwise install Debian's podman and mmdebstrap packages."
        )
    if os.geteuid() != 0:
        return "the image tests run the image's filesystem under chroot: run them as root."
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Without podman and mmdebstrap the image tests are one failure saying what to install."""
    suite_requires(
        items,
        where=Path(__file__).parent / "test_image.py",
        name="image-tools",
        missing=image_tools_missing(),
    )


@pytest.fixture
def database_url() -> Iterator[str]:
    """A new, empty database on the suite's PostgreSQL (what compose's postgres service gives)."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        pytest.skip("needs PostgreSQL: run with DATABASE_URL=postgres://... (.ci/run does)")
    base, _, name = url.rpartition("/")
    fresh = f"{name}_compose"
    # The server's maintenance database: DATABASE_URL's own may not exist (the suite uses test_*).
    maintenance = f"{base}/postgres"
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{fresh}"')
    yield f"{base}/{fresh}"
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """An append-only Redis of its own (what compose's redis service gives)."""
    redis = PrivateRedis(tmp_path).start()
    yield redis.url
    redis.kill()
