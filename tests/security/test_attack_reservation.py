"""Attacks on the token reservation: request shapes that made the upstream produce more than was
reserved, so a customer at the edge of a daily TOKEN limit could overshoot it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.db.models import Sum
from pytest_django.fixtures import Settings

from billing.models import UsageEvent
from billing.services.ingest import usage_ingest
from groups.models import Workspace
from tests.fakes.model_server import FakeModelServerThread
from tests.proxy.conftest import SLUG, GatewayThread, Tenant, compatible_target, tenant_build

DAILY_TOKENS = 1000
ANSWER_TOKENS = 400  # what the fake upstream writes per choice when nothing caps it
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def talkative() -> Iterator[FakeModelServerThread]:
    """A fake upstream that answers 400 tokens per choice unless a cap stops it."""
    with FakeModelServerThread(answer_tokens=ANSWER_TOKENS) as fake:
        yield fake


@pytest.fixture
def limited(
    gateway: GatewayThread,
    workspace: Workspace,
    talkative: FakeModelServerThread,
    settings: Settings,
) -> Tenant:
    """A key with a daily TOKEN limit of 1000 on `acme/llama`; the default cap is 50 tokens."""
    settings.GATEWAY_DEFAULT_MAX_TOKENS = 50
    limits = {"usage_limits": [{"type": "TOKEN", "unit": "DAY", "threshold": DAILY_TOKENS}]}
    return tenant_build(
        workspace=workspace, targets=[compatible_target(talkative.url)], limits=limits
    )


def _post(
    gateway: GatewayThread, tenant: Tenant, body: dict[str, Any], route: str = "chat/completions"
) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/{route}",
        content=json.dumps({"model": SLUG, **body}).encode(),
        headers={"Authorization": f"Bearer {tenant.key}", "Content-Type": "application/json"},
        timeout=30,
    )


def _recorded_tokens() -> int:
    usage_ingest()
    total = UsageEvent.objects.aggregate(total=Sum("input_tokens") + Sum("output_tokens"))
    return int(total["total"] or 0)


def _refused_before_the_upstream(response: httpx.Response, upstream: FakeModelServerThread) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "usage_limit_exceeded"
    assert response.headers["x-should-retry"] == "false"
    assert upstream.requests == []
    assert _recorded_tokens() == 0


def test_n_choices_cannot_overshoot_a_daily_token_limit(
    gateway: GatewayThread, limited: Tenant, talkative: FakeModelServerThread
) -> None:
    response = _post(gateway, limited, {"messages": MESSAGES, "n": 8, "max_tokens": 200})

    _refused_before_the_upstream(response, talkative)


def test_best_of_cannot_overshoot_a_daily_token_limit(
    gateway: GatewayThread, limited: Tenant, talkative: FakeModelServerThread
) -> None:
    body = {"prompt": "hi", "n": 1, "best_of": 8, "max_tokens": 200}

    response = _post(gateway, limited, body, route="completions")

    _refused_before_the_upstream(response, talkative)


def test_a_batched_prompt_list_cannot_overshoot_a_daily_token_limit(
    gateway: GatewayThread, limited: Tenant, talkative: FakeModelServerThread
) -> None:
    body = {"prompt": ["hi"] * 8, "max_tokens": 200}

    response = _post(gateway, limited, body, route="completions")

    _refused_before_the_upstream(response, talkative)


@pytest.mark.parametrize("budget", [65536.0, "65536"])
def test_a_non_integer_max_tokens_cannot_fall_back_to_the_default(
    gateway: GatewayThread, limited: Tenant, talkative: FakeModelServerThread, budget: Any
) -> None:
    response = _post(gateway, limited, {"messages": MESSAGES, "max_tokens": budget})

    _refused_before_the_upstream(response, talkative)


def test_a_zero_max_completion_tokens_cannot_lift_the_cap(
    gateway: GatewayThread, limited: Tenant, talkative: FakeModelServerThread
) -> None:
    response = _post(gateway, limited, {"messages": MESSAGES, "max_completion_tokens": 0})

    assert response.status_code == 200
    assert talkative.requests[0].json["max_completion_tokens"] == 50
    assert response.json()["usage"]["completion_tokens"] <= 50
    assert _recorded_tokens() <= 50 + len(json.dumps(MESSAGES))


def test_a_request_without_max_tokens_is_capped_at_what_was_reserved(
    gateway: GatewayThread, limited: Tenant, talkative: FakeModelServerThread
) -> None:
    response = _post(gateway, limited, {"messages": MESSAGES, "stream": True})

    assert response.status_code == 200
    sent = talkative.requests[0].json
    assert sent["max_tokens"] == sent["max_completion_tokens"] == 50
    assert response.text.count('"content":"tok') + response.text.count('"content":" tok') == 50
    assert _recorded_tokens() <= 50 + len(json.dumps(MESSAGES))


def test_a_huge_n_is_refused_before_the_upstream(
    gateway: GatewayThread, limited: Tenant, talkative: FakeModelServerThread
) -> None:
    response = _post(gateway, limited, {"messages": MESSAGES, "n": 10_000, "max_tokens": 1})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter" and error["param"] == "n"
    assert talkative.requests == []


def test_token_id_inputs_cannot_hide_behind_the_byte_estimate(
    gateway: GatewayThread, limited: Tenant, talkative: FakeModelServerThread
) -> None:
    # 1500 one-digit token ids take about 3000 bytes of compact JSON: 750 tokens by bytes / 4.
    raw = json.dumps({"model": SLUG, "input": [1] * 1500}, separators=(",", ":")).encode()

    response = httpx.post(
        f"{gateway.url}/v1/embeddings",
        content=raw,
        headers={"Authorization": f"Bearer {limited.key}", "Content-Type": "application/json"},
    )

    _refused_before_the_upstream(response, talkative)


def test_a_never_fitting_request_tells_the_openai_sdks_not_to_retry(
    gateway: GatewayThread, limited: Tenant, talkative: FakeModelServerThread
) -> None:
    response = _post(gateway, limited, {"messages": MESSAGES, "max_tokens": DAILY_TOKENS})

    assert response.status_code == 429
    assert response.headers["x-should-retry"] == "false"
    assert "retry-after" not in response.headers


def test_an_image_url_cannot_hide_its_tokens_behind_a_short_body(
    gateway: GatewayThread, workspace: Workspace, settings: Settings
) -> None:
    settings.GATEWAY_MEDIA_PART_TOKENS = 3000
    limits = {"usage_limits": [{"type": "TOKEN", "unit": "DAY", "threshold": DAILY_TOKENS}]}
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    with FakeModelServerThread(media_tokens=3000) as vision:
        tenant = tenant_build(
            workspace=workspace, targets=[compatible_target(vision.url)], limits=limits
        )
        body = {"messages": [{"role": "user", "content": [image]}], "max_tokens": 5}

        response = _post(gateway, tenant, body)

        _refused_before_the_upstream(response, vision)
