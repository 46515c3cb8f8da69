"""The `openai` npm package (under Node) against the gateway: streaming and not, typed errors.

The package is pinned in tests/clients/node/package-lock.json and installed by `npm ci` when
node_modules is missing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from billing.models import UsageEvent
from billing.services.ingest import usage_ingest
from groups.models import Workspace
from tests.fakes.model_server import FakeModelServerThread
from tests.proxy.conftest import SLUG, GatewayThread, Tenant, compatible_target, tenant_build

pytestmark = pytest.mark.slow

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="session")
def node_sdk() -> Path:
    """The node project with its locked dependencies installed."""
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300
        )
    return NODE_DIR


def node_run(node_sdk: Path, **env: str) -> dict[str, Any]:
    done = subprocess.run(
        ["node", "sdk_check.mjs"],
        cwd=node_sdk,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.fixture
def results(
    node_sdk: Path,
    gateway: GatewayThread,
    tenant: Tenant,
    workspace: Workspace,
    upstream: FakeModelServerThread,
) -> dict[str, Any]:
    """Everything sdk_check.mjs observed."""
    limits = {"usage_limits": [{"type": "REQUEST", "unit": "DAY", "threshold": 1}]}
    limited = tenant_build(
        workspace=workspace,
        targets=[compatible_target(upstream.url)],
        slug="acme/limited",
        limits=limits,
        external_id="cust_limited",
    )
    # The limited key is allowed on SLUG too, through its own group with a one-request budget.
    from groups.services import group_update
    from groups.services.audit import SYSTEM_ACTOR

    group_update(
        workspace=workspace,
        group_id=limited.group.id,
        actor=SYSTEM_ACTOR,
        models=[{"slug": SLUG, "rate_limits": [], **limits}],
    )
    return node_run(
        node_sdk, GATEWAY_URL=gateway.url, API_KEY=tenant.key, LIMITED_KEY=limited.key, SLUG=SLUG
    )


def test_non_streaming_calls_show_the_slug_and_usage(results: dict[str, Any]) -> None:
    assert results["completion"]["model"] == SLUG
    assert results["completion"]["content"] == "tok0 tok1 tok2"
    assert results["completion"]["usage"]["completion_tokens"] == 3
    assert results["text"] == {"model": SLUG, "text": "tok0 tok1"}
    assert results["embedding"] == {"model": SLUG, "dims": 8}
    assert SLUG in results["models"]


def test_streaming_yields_the_tokens_and_hides_the_usage_chunk(results: dict[str, Any]) -> None:
    assert results["stream"] == {
        "models": [SLUG],
        "text": "tok0 tok1 tok2 tok3",
        "usageChunk": False,
    }
    assert results["streamWithUsage"]["last"]["choices"] == []
    assert results["streamWithUsage"]["last"]["usage"]["completion_tokens"] == 2


def test_the_request_id_header_names_the_usage_event(results: dict[str, Any]) -> None:
    usage_ingest()

    assert UsageEvent.objects.filter(request_id=results["requestId"]).exists()


def test_failures_raise_the_sdks_typed_errors(results: dict[str, Any]) -> None:
    errors = results["errors"]

    assert errors["badKey"] == {
        "raised": "AuthenticationError",
        "status": 401,
        "code": "invalid_api_key",
        "type": "authentication_error",
    }
    assert errors["unknownModel"]["raised"] == "NotFoundError"
    assert errors["unknownModel"]["code"] == "model_not_found"
    assert errors["badMetadata"]["raised"] == "BadRequestError"
    assert errors["badMetadata"]["code"] == "invalid_request_metadata"
    for name in ("rateLimited", "rateLimitedStream"):
        assert errors[name]["raised"] == "RateLimitError", errors[name]
        assert errors[name]["code"] == "usage_limit_exceeded"
    assert errors["brokenStream"]["raised"] == "APIError", errors["brokenStream"]


def test_responses_create_and_its_stream_show_the_slug_and_usage(results: dict[str, Any]) -> None:
    assert results["response"]["model"] == SLUG
    assert results["response"]["text"] == "tok0 tok1 tok2"
    assert results["response"]["usage"]["output_tokens"] == 3
    assert results["responseStream"] == {
        "text": "tok0 tok1 tok2 tok3 tok4",
        "last": "response.completed",
        "model": SLUG,
        "outputTokens": 5,
    }


def test_each_response_is_billed_once_with_its_tokens(results: dict[str, Any]) -> None:
    usage_ingest()

    events = [UsageEvent.objects.get(request_id=rid) for rid in results["responseRequestIds"]]
    assert [(e.input_tokens, e.output_tokens, e.usage_estimated) for e in events] == [
        (3, 3, False),
        (3, 5, False),
    ]
