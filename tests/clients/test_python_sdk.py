"""The `openai` Python SDK against the gateway, beyond tests/proxy/test_sdk.py: async streaming,
and each failure surfacing as the SDK's typed exception with the gateway's code."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from billing.models import UsageEvent
from billing.services.ingest import usage_ingest
from groups.models import Workspace
from tests.fakes.model_server import FakeModelServerThread
from tests.proxy.conftest import (
    SLUG,
    GatewayThread,
    StaticUpstream,
    Tenant,
    compatible_target,
    tenant_build,
)

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def sync_client(gateway: GatewayThread, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def async_client(gateway: GatewayThread, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def test_async_streaming_yields_the_tokens_with_the_slug(
    gateway: GatewayThread, tenant: Tenant
) -> None:
    async def collect() -> list[Any]:
        async with async_client(gateway, tenant.key) as client:
            stream = await client.chat.completions.create(
                model=SLUG, messages=MESSAGES, stream=True, max_tokens=3
            )
            return [chunk async for chunk in stream]

    chunks = asyncio.run(collect())

    assert {chunk.model for chunk in chunks} == {SLUG}
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "tok0 tok1 tok2"
    assert chunks[-1].choices[0].finish_reason == "length"


def test_async_completions_and_embeddings(gateway: GatewayThread, tenant: Tenant) -> None:
    async def call() -> tuple[Any, Any]:
        async with async_client(gateway, tenant.key) as client:
            return await asyncio.gather(
                client.completions.create(model=SLUG, prompt="hi", max_tokens=2),
                client.embeddings.create(model=SLUG, input=["a", "b"]),
            )

    text, embedding = asyncio.run(call())

    assert text.choices[0].text == "tok0 tok1" and text.model == SLUG
    assert [item.index for item in embedding.data] == [0, 1]


def test_async_errors_are_typed(gateway: GatewayThread, tenant: Tenant) -> None:
    async def failures() -> tuple[object, object]:
        async with async_client(
            gateway, "sky_000000000000.not-a-real-key-000000000000000000"
        ) as bad:
            async with async_client(gateway, tenant.key) as good:
                return await asyncio.gather(
                    bad.chat.completions.create(model=SLUG, messages=MESSAGES),
                    good.chat.completions.create(model="acme/missing", messages=MESSAGES),
                    return_exceptions=True,
                )

    auth, missing = asyncio.run(failures())

    assert isinstance(auth, openai.AuthenticationError) and auth.code == "invalid_api_key"
    assert isinstance(missing, openai.NotFoundError) and missing.code == "model_not_found"


def test_invalid_metadata_raises_bad_request(gateway: GatewayThread, tenant: Tenant) -> None:
    client = sync_client(gateway, tenant.key)

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=SLUG, messages=MESSAGES, extra_headers={"X-Request-Metadata": "[not an object"}
        )

    assert caught.value.code == "invalid_request_metadata"
    assert caught.value.param == "X-Request-Metadata"
    assert caught.value.type == "invalid_request_error"


def test_a_body_over_the_limit_raises_a_413_status_error(
    gateway: GatewayThread, tenant: Tenant, settings: Any
) -> None:
    settings.GATEWAY_MAX_BODY_BYTES = 2048
    client = sync_client(gateway, tenant.key)

    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model=SLUG, messages=[{"role": "user", "content": "x" * 4096}]
        )

    assert caught.value.status_code == 413
    assert caught.value.code == "request_too_large"


def test_a_dead_upstream_raises_internal_server_error(
    gateway: GatewayThread, workspace: Workspace
) -> None:
    tenant = tenant_build(workspace=workspace, targets=[compatible_target("http://127.0.0.1:9/v1")])
    client = sync_client(gateway, tenant.key)

    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=SLUG, messages=MESSAGES)

    assert caught.value.status_code == 502
    assert caught.value.code == "bad_gateway"


def test_an_overloaded_upstream_surfaces_its_503(
    gateway: GatewayThread, workspace: Workspace, unavailable_upstream: StaticUpstream
) -> None:
    tenant = tenant_build(
        workspace=workspace, targets=[compatible_target(unavailable_upstream.url)]
    )
    client = sync_client(gateway, tenant.key)

    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=SLUG, messages=MESSAGES, stream=True)

    assert caught.value.status_code == 503


def test_a_stream_broken_midway_raises_an_api_error_while_iterating(
    gateway: GatewayThread, tenant: Tenant, upstream: FakeModelServerThread
) -> None:
    client = sync_client(gateway, tenant.key)
    stream = client.chat.completions.create(
        model=SLUG,
        messages=MESSAGES,
        stream=True,
        max_tokens=10,
        extra_headers={"x-fake-drop-after": "2"},
    )
    received: list[str] = []

    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")

    assert "".join(received) == "tok0 tok1"
    assert isinstance(caught.value.body, dict) and caught.value.body["code"]


def test_limits_raise_rate_limit_error_in_the_async_client(
    gateway: GatewayThread, workspace: Workspace, upstream: FakeModelServerThread
) -> None:
    limits = {"usage_limits": [{"type": "REQUEST", "unit": "DAY", "threshold": 1}]}
    tenant = tenant_build(
        workspace=workspace, targets=[compatible_target(upstream.url)], limits=limits
    )

    async def twice() -> BaseException | None:
        async with async_client(gateway, tenant.key) as client:
            await client.chat.completions.create(model=SLUG, messages=MESSAGES)
            try:
                await client.chat.completions.create(model=SLUG, messages=MESSAGES, stream=True)
            except openai.RateLimitError as exc:
                return exc
        return None

    error = asyncio.run(twice())

    assert isinstance(error, openai.RateLimitError)
    assert error.code == "usage_limit_exceeded" and error.type == "usage_limit_error"


def test_responses_create_returns_the_answer_with_the_slug_and_bills_it(
    gateway: GatewayThread, tenant: Tenant, upstream: FakeModelServerThread
) -> None:
    client = sync_client(gateway, tenant.key)

    reply = client.responses.create(model=SLUG, input="hello there", max_output_tokens=3)

    assert reply.model == SLUG and reply.output_text == "tok0 tok1 tok2"
    assert reply.usage is not None and reply.usage.output_tokens == 3
    assert upstream.requests[-1].json["model"] == "fake-model"
    usage_ingest()
    event = UsageEvent.objects.get()
    assert (event.input_tokens, event.output_tokens, event.usage_estimated) == (2, 3, False)


def test_responses_stream_yields_the_text_and_the_final_response(
    gateway: GatewayThread, tenant: Tenant
) -> None:
    client = sync_client(gateway, tenant.key)

    with client.responses.stream(
        model=SLUG, input="hello there", max_output_tokens=32, extra_body={"fake": {"tokens": 8}}
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()

    assert "".join(deltas) == " ".join(f"tok{i}" for i in range(8))
    assert final.model == SLUG and final.usage is not None and final.usage.output_tokens == 8
    usage_ingest()
    event = UsageEvent.objects.get()
    assert (event.input_tokens, event.output_tokens, event.usage_estimated) == (2, 8, False)


def test_a_model_is_retrieved_or_not_found(gateway: GatewayThread, tenant: Tenant) -> None:
    client = sync_client(gateway, tenant.key)

    model = client.models.retrieve(SLUG)
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("acme/missing")

    assert (model.id, model.owned_by) == (SLUG, "acme")
    assert caught.value.code == "model_not_found"
