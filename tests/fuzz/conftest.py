"""Fuzz suite fixtures: the real gateway on a live server thread, a tenant with limits, budgets."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings

from groups.models import Workspace
from tests.fakes.model_server import FakeModelServerThread
from tests.proxy.conftest import (  # noqa: F401 - fixtures reused from the proxy suite
    SLUG,
    GatewayThread,
    Tenant,
    compatible_target,
    gateway,
    tenant_build,
    upstream,
)
from tests.security.conftest import world_a  # noqa: F401 - a populated tenant for the API edges

# Examples per property: bounded in the suite, `make fuzz` raises it (GATEWAY_FUZZ_EXAMPLES).
EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "60"))
# Every limit kind is configured so generated bodies go through admission too; the day budget
# is large enough never to run out, and below the huge `max_tokens` values the strategies draw.
LIMITS = {
    "rate_limits": [
        {"type": "REQUEST", "unit": "SECOND", "threshold": 1_000_000},
        {"type": "TOKEN", "unit": "MINUTE", "threshold": 1_000_000_000},
    ],
    "usage_limits": [{"type": "TOKEN", "unit": "DAY", "threshold": 1_000_000_000}],
}


def fuzz_settings(examples: int = EXAMPLES) -> settings:
    """Hypothesis settings of one property: deterministic, no deadline, no example database."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture
def tenant(
    gateway: GatewayThread,  # noqa: F811 - the imported fixture
    workspace: Workspace,
    upstream: FakeModelServerThread,  # noqa: F811
) -> Tenant:
    """`acme/llama` on the fake upstream, for a group with every kind of limit."""
    return tenant_build(
        workspace=workspace, targets=[compatible_target(upstream.url)], limits=LIMITS
    )


@pytest.fixture
def http(gateway: GatewayThread) -> Iterator[httpx.Client]:  # noqa: F811
    """A plain HTTP client on the gateway (no retries, short timeouts)."""
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


def assert_envelope(response: httpx.Response, *, passthrough: bool = False) -> dict[str, Any]:
    """A 4xx in the one error envelope (never a 5xx); returns the `error` object.

    `passthrough`: the error is an upstream's OpenAI-shaped body passed through, whose
    `code` may be null as OpenAI's own often is.
    """
    assert response.status_code < 500, (response.status_code, response.content[:500])
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "code", "param"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    assert isinstance(error["code"], str) or (passthrough and error["code"] is None), error
    assert error["param"] is None or isinstance(error["param"], str)
    return error
