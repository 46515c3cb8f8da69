"""Real-client fixtures: the gateway on a live server thread with a tenant on the fake upstream."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.proxy.conftest import (  # noqa: F401 - fixtures reused from the proxy suite
    gateway,
    tenant,
    unavailable_upstream,
    upstream,
)
from tests.tooling import suite_requires

NODE_MISSING = (
    "Node.js and npm are missing: `make test` installs them where apt-get and root or sudo are "
    "available; otherwise install Node.js 18+ with npm."
)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Without Node.js the npm SDK test is one failure saying what to install."""
    present = shutil.which("node") and shutil.which("npm")
    suite_requires(
        items,
        where=Path(__file__).parent / "test_node_sdk.py",
        name="node",
        missing=None if present else NODE_MISSING,
    )
