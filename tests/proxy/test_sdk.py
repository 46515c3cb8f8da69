"""The official openai SDK against the gateway, with only base_url and api_key set."""

from __future__ import annotations

import asyncio

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from billing.models import UsageEvent
from billing.services.ingest import usage_ingest
from tests.proxy.conftest import SLUG, GatewayThread, compatible_target, tenant_build

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "say hello to the gateway"}
]


def _client(gateway: GatewayThread, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key)


def test_sync_chat_completion_shows_the_slug_and_records_usage(gateway, tenant, upstream):
    client = _client(gateway, tenant.key)

    completion = client.chat.completions.create(model=SLUG, messages=MESSAGES, max_tokens=5)

    assert completion.model == SLUG
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    assert upstream.requests[-1].json["model"] == "fake-model"
    assert usage_ingest() == 1
    event = UsageEvent.objects.get()
    assert (event.model_slug, event.status, event.output_tokens) == (SLUG, "completed", 5)
    assert event.group_id == tenant.group.id and event.api_key_prefix == tenant.prefix
    assert not event.usage_estimated


def test_async_client_works(gateway, tenant):
    async def call() -> openai.types.chat.ChatCompletion:
        async with openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=tenant.key) as client:
            return await client.chat.completions.create(model=SLUG, messages=MESSAGES)

    completion = asyncio.run(call())

    assert completion.model == SLUG
    assert (completion.choices[0].message.content or "").startswith("tok0")


def test_async_client_streams(gateway, tenant):
    async def call() -> list[str]:
        async with openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=tenant.key) as client:
            stream = await client.chat.completions.create(
                model=SLUG, messages=MESSAGES, stream=True, max_tokens=3
            )
            return [chunk.choices[0].delta.content or "" async for chunk in stream]

    pieces = asyncio.run(call())

    assert "".join(pieces) == "tok0 tok1 tok2"


def test_streaming_yields_chunks_with_the_slug_and_no_usage_chunk(gateway, tenant, upstream):
    client = _client(gateway, tenant.key)

    chunks = list(
        client.chat.completions.create(model=SLUG, messages=MESSAGES, stream=True, max_tokens=4)
    )

    assert {chunk.model for chunk in chunks} == {SLUG}
    assert all(chunk.choices for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "tok0 tok1 tok2 tok3"
    assert upstream.requests[-1].json["stream_options"] == {"include_usage": True}


def test_streaming_keeps_the_usage_chunk_when_asked(gateway, tenant):
    client = _client(gateway, tenant.key)

    chunks = list(
        client.chat.completions.create(
            model=SLUG,
            messages=MESSAGES,
            stream=True,
            max_tokens=3,
            stream_options={"include_usage": True},
        )
    )

    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and usage.completion_tokens == 3
    assert usage_ingest() == 1


def test_raw_response_carries_the_events_request_id(gateway, tenant):
    client = _client(gateway, tenant.key)

    raw = client.chat.completions.with_raw_response.create(model=SLUG, messages=MESSAGES)

    request_id = raw.headers["x-request-id"]
    assert raw.parse().model == SLUG
    usage_ingest()
    assert UsageEvent.objects.get().request_id == request_id


def test_completions_and_embeddings_are_routed(gateway, tenant, upstream):
    client = _client(gateway, tenant.key)

    text = client.completions.create(model=SLUG, prompt="hello there", max_tokens=2)
    embedding = client.embeddings.create(model=SLUG, input="hello")

    assert text.model == SLUG and text.choices[0].text == "tok0 tok1"
    assert embedding.model == SLUG and len(embedding.data[0].embedding) == 8
    assert [r.path for r in upstream.requests] == ["/v1/completions", "/v1/embeddings"]


def test_models_lists_the_slugs_the_key_may_call(gateway, tenant):
    client = _client(gateway, tenant.key)

    models = client.models.list()

    assert [m.id for m in models.data] == [SLUG]


def test_unknown_key_raises_authentication_error(gateway, tenant):
    client = _client(gateway, "sky_unknownkey00.nothing-here-at-all-000000000000000")

    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model=SLUG, messages=MESSAGES)

    assert caught.value.code == "invalid_api_key"
    assert caught.value.response.headers["x-request-id"]


def test_model_outside_the_group_raises_not_found(gateway, tenant):
    client = _client(gateway, tenant.key)

    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="acme/other", messages=MESSAGES)

    assert caught.value.code == "model_not_found"


def test_exhausted_limit_raises_rate_limit_error(gateway, workspace, upstream):
    limits = {"rate_limits": [{"type": "REQUEST", "unit": "MINUTE", "threshold": 1}]}
    tenant = tenant_build(
        workspace=workspace, targets=[compatible_target(upstream.url)], limits=limits
    )
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=tenant.key, max_retries=0)
    first = client.chat.completions.with_raw_response.create(model=SLUG, messages=MESSAGES)

    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=SLUG, messages=MESSAGES)

    assert first.headers["x-ratelimit-limit-requests"] == "1"
    assert caught.value.code == "rate_limit_exceeded"
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert len(upstream.requests) == 1
