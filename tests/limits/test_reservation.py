"""Admission reserves an upper bound of what the upstream may produce and caps the upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import openai
import pytest
from django.db.models import Sum
from openai.types.chat import ChatCompletionMessageParam

from billing.models import UsageEvent
from billing.services.ingest import usage_ingest
from gateway_project.kernel.errors import ValidationFailed
from groups.models import Workspace
from routing.admission import limits_admit
from routing.usage import Budget, usage_reserve
from tests.fakes.model_server import FakeModelServerThread, count_tokens
from tests.limits.support import T0, rate, run, usage
from tests.proxy.conftest import SLUG, GatewayThread, compatible_target, gateway, tenant_build

__all__ = ["gateway"]  # the proxy suite's live-server fixture, used here

DEFAULT, CEILING = 100, 10_000
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
CHAT = {"model": SLUG, "messages": MESSAGES}


def reserve(body: dict[str, Any], *, kind: str = "chat", body_bytes: int = 40) -> Budget:
    """The budget of `body` with a default cap of 100 and a ceiling of 10 000."""
    return usage_reserve(
        kind=kind, body=body, body_bytes=body_bytes, default_max_tokens=DEFAULT, ceiling=CEILING
    )


def test_the_cap_is_reserved_once_per_choice() -> None:
    budget = reserve(CHAT | {"n": 8, "max_tokens": 50})

    assert budget.tokens == 10 + 8 * 50
    assert budget.fields == {"max_tokens": 50, "n": 8}


def test_best_of_reserves_its_candidates_when_above_n() -> None:
    budget = reserve({"prompt": "hi", "n": 2, "best_of": 5, "max_tokens": 10}, kind="completions")

    assert budget.tokens == 10 + 5 * 10
    assert budget.fields == {"max_tokens": 10, "n": 2, "best_of": 5}


@pytest.mark.parametrize(
    ("prompt", "prompts"),
    [
        ("one", 1),
        (["one", "two", "three"], 3),
        ([1, 2, 3, 4], 1),
        ([[1, 2], [3], [4]], 3),
        ([], 1),
    ],
)
def test_a_batched_prompt_reserves_the_cap_per_prompt(prompt: Any, prompts: int) -> None:
    budget = reserve({"prompt": prompt, "max_tokens": 10}, kind="completions")

    assert budget.tokens - 10 == prompts * 10


def test_choices_and_prompts_multiply() -> None:
    budget = reserve({"prompt": ["a", "b"], "n": 3, "max_tokens": 7}, kind="completions")

    assert budget.tokens == 10 + 2 * 3 * 7


def test_max_completion_tokens_wins_and_both_fields_carry_it() -> None:
    budget = reserve(CHAT | {"max_completion_tokens": 30, "max_tokens": 9000})

    assert budget.tokens == 10 + 30
    assert budget.fields == {"max_completion_tokens": 30, "max_tokens": 30}


@pytest.mark.parametrize("zero", [0, None])
def test_a_zero_or_null_max_completion_tokens_falls_through_to_max_tokens(zero: Any) -> None:
    budget = reserve(CHAT | {"max_completion_tokens": zero, "max_tokens": 60})

    assert budget.tokens == 10 + 60
    assert budget.fields == {"max_completion_tokens": 60, "max_tokens": 60}


def test_a_cap_field_the_route_does_not_read_is_overwritten_too() -> None:
    budget = reserve(
        {"prompt": "hi", "max_tokens": 10, "max_completion_tokens": 10**6}, kind="completions"
    )

    assert budget.tokens == 10 + 10
    assert budget.fields == {"max_completion_tokens": 10, "max_tokens": 10}


def test_a_zero_cap_alone_reserves_and_sends_the_default() -> None:
    budget = reserve(CHAT | {"max_completion_tokens": 0})

    assert budget.tokens == 10 + DEFAULT
    assert budget.fields == {"max_completion_tokens": DEFAULT}


def test_no_cap_reserves_the_default_and_sends_it_in_every_field_the_route_reads() -> None:
    chat = reserve(CHAT)
    text = reserve({"prompt": "hi"}, kind="completions")

    assert chat.tokens == text.tokens == 10 + DEFAULT
    assert chat.fields == {"max_completion_tokens": DEFAULT, "max_tokens": DEFAULT}
    assert text.fields == {"max_tokens": DEFAULT}


@pytest.mark.parametrize("value", [65.0, "65", " 65 ", "65.0"])
def test_numbers_an_upstream_parses_as_integers_are_reserved_as_such(value: Any) -> None:
    budget = reserve(CHAT | {"max_tokens": value, "n": value})

    assert budget.tokens == 10 + 65 * 65
    assert budget.fields == {"max_tokens": 65, "n": 65}


def test_the_default_cap_never_exceeds_the_ceiling() -> None:
    budget = usage_reserve(
        kind="chat", body=CHAT, body_bytes=40, default_max_tokens=500, ceiling=200
    )

    assert budget.tokens == 10 + 200


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", -1),
        ("max_tokens", "lots"),
        ("max_tokens", True),
        ("max_tokens", 1.5),
        ("max_tokens", "1e400"),
        ("max_tokens", [5]),
        ("max_tokens", CEILING + 1),
        ("max_completion_tokens", 10**30),
        ("n", 0),
        ("n", 129),
        ("n", "two"),
        ("best_of", 10**6),
    ],
)
def test_a_shape_that_cannot_be_bounded_is_a_400_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValidationFailed) as raised:
        reserve(CHAT | {field: value})

    assert raised.value.status == 400
    assert raised.value.code == "invalid_parameter"
    assert raised.value.param == field
    assert f"`{field}`" in raised.value.message


def test_responses_reserve_max_output_tokens() -> None:
    budget = reserve({"input": "hi", "max_output_tokens": 80, "n": 9}, kind="responses")

    assert budget.tokens == 10 + 80
    assert budget.fields == {"max_output_tokens": 80}


def test_embeddings_reserve_the_prompt_only() -> None:
    budget = reserve({"input": "hello", "max_tokens": 10**9, "n": 99}, kind="embeddings")

    assert budget == Budget(10, {})


def test_token_ids_count_one_token_each_even_when_the_bytes_say_less() -> None:
    ids = list(range(10)) * 100
    body = {"input": [ids, ids]}

    budget = reserve(body, kind="embeddings", body_bytes=len(json.dumps(body)))

    assert budget.tokens == 2000


def test_media_parts_reserve_their_tokens_beyond_their_bytes() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    text = {"type": "text", "text": "what is this?"}
    chat = {"messages": [{"role": "user", "content": [text, image, image]}], "max_tokens": 5}
    responses = {"input": [{"role": "user", "content": [{"type": "input_image"}]}]}

    budget = usage_reserve(
        kind="chat",
        body=chat,
        body_bytes=40,
        default_max_tokens=DEFAULT,
        ceiling=CEILING,
        media_tokens=700,
    )
    later = usage_reserve(
        kind="responses",
        body=responses | {"max_output_tokens": 5},
        body_bytes=40,
        default_max_tokens=DEFAULT,
        ceiling=CEILING,
        media_tokens=700,
    )

    assert budget.tokens == 10 + 2 * 700 + 5
    assert later.tokens == 10 + 700 + 5


def test_a_never_fitting_rejection_tells_clients_not_to_retry() -> None:
    limits = [usage("TOKEN", 100)]

    admission = run(limits_admit(limits=limits, reserve_tokens=101, slug=SLUG, now=T0))

    assert admission.retry_after is None
    assert admission.headers["x-should-retry"] == "false"


def test_an_ordinary_429_leaves_retrying_to_the_client() -> None:
    limits = [rate("REQUEST", "MINUTE", 1)]
    run(limits_admit(limits=limits, reserve_tokens=1, slug=SLUG, now=T0))

    admission = run(limits_admit(limits=limits, reserve_tokens=1, slug=SLUG, now=T0))

    assert not admission.allowed and admission.retry_after is not None
    assert "x-should-retry" not in admission.headers


# --- Through the real gateway -------------------------------------------------------------

DAILY_TOKENS = 20_000
ANSWER_TOKENS = 60


@pytest.fixture
def long_upstream() -> Iterator[FakeModelServerThread]:
    """A fake upstream whose answers run to 60 tokens per choice unless capped."""
    with FakeModelServerThread(answer_tokens=ANSWER_TOKENS, first_byte_delay_ms=30) as fake:
        yield fake


async def _burst(url: str, key: str, raw: bytes, count: int) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        calls = [
            client.post("/v1/chat/completions", content=raw, headers=headers) for _ in range(count)
        ]
        return await asyncio.gather(*calls)


@pytest.mark.parametrize("stream", [False, True])
def test_a_daily_token_limit_holds_under_200_concurrent_requests_with_several_choices(
    gateway: GatewayThread,
    workspace: Workspace,
    long_upstream: FakeModelServerThread,
    stream: bool,
) -> None:
    limits = {"usage_limits": [{"type": "TOKEN", "unit": "DAY", "threshold": DAILY_TOKENS}]}
    tenant = tenant_build(
        workspace=workspace, targets=[compatible_target(long_upstream.url)], limits=limits
    )
    body = CHAT | {"n": 4, "max_tokens": 40, "stream": stream}
    raw = json.dumps(body).encode()
    # The prompt-estimate error: how far the fake's prompt count can exceed bytes / 4.
    error = max(0, count_tokens(body["messages"]) - len(raw) // 4)

    responses = asyncio.run(_burst(gateway.url, tenant.key, raw, 200))
    usage_ingest()

    statuses = {response.status_code for response in responses}
    admitted = sum(response.status_code == 200 for response in responses)
    recorded = UsageEvent.objects.aggregate(total=Sum("input_tokens") + Sum("output_tokens"))[
        "total"
    ]
    assert statuses == {200, 429}
    assert UsageEvent.objects.count() == admitted
    assert recorded <= DAILY_TOKENS + admitted * error
    assert recorded > DAILY_TOKENS // 2


def test_the_openai_sdk_sends_a_never_fitting_request_once(
    gateway: GatewayThread, workspace: Workspace, long_upstream: FakeModelServerThread
) -> None:
    limits = {"usage_limits": [{"type": "TOKEN", "unit": "DAY", "threshold": 100}]}
    tenant = tenant_build(
        workspace=workspace, targets=[compatible_target(long_upstream.url)], limits=limits
    )
    sent: list[httpx2.Request] = []
    http = httpx2.Client(event_hooks={"request": [sent.append]})  # the SDK's own HTTP client
    client = openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key=tenant.key, max_retries=3, http_client=http
    )

    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=SLUG, messages=MESSAGES, n=2, max_tokens=60)

    assert caught.value.code == "usage_limit_exceeded"
    assert len(sent) == 1
    assert long_upstream.requests == []
