"""Real-client fixtures: the gateway on a live server thread with a tenant on the fake upstream."""

from __future__ import annotations

from tests.proxy.conftest import (  # noqa: F401 - fixtures reused from the proxy suite
    gateway,
    tenant,
    unavailable_upstream,
    upstream,
)
