"""Attacks through inference input and upstream answers: unstorable metadata, unbilled streams,
unbounded buffers, client strings as metric labels, cheap floods of bad keys and models."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from billing.models import UsageEvent
from billing.services.ingest import usage_ingest
from routing import authcache, ttl_cache
from routing.streaming import SseRelay
from tests.proxy.conftest import SLUG
from tests.proxy.test_cache import query_log  # noqa: F401 - fixture

CHAT = "/v1/chat/completions"


def _body(**extra):
    return {"model": SLUG, "messages": [{"role": "user", "content": "hi"}], **extra}


def _post(gateway, key, body, **headers):
    headers = {"Authorization": f"Bearer {key}", **headers}
    return httpx.post(f"{gateway.url}{CHAT}", json=body, headers=headers, timeout=30)


def _sse(response):
    return [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize(
    "metadata",
    [b'{"a": "\\u0000"}', b'{"a": "\\ud800"}', b'{"a": 1e999}', b'{"a": NaN}', b'{"\\u0000": 1}'],
    ids=["nul", "lone-surrogate", "infinite-number", "nan-literal", "nul-in-a-key"],
)
def test_unstorable_metadata_cannot_halt_billing(gateway, tenant, upstream, metadata):
    response = _post(gateway, tenant.key, _body(), **{"X-Request-Metadata": metadata})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request_metadata"
    assert upstream.requests == []  # refused before any limit or upstream work


def test_non_utf8_metadata_header_is_refused(gateway, tenant, upstream):
    response = _post(gateway, tenant.key, _body(), **{"X-Request-Metadata": b'{"a": "\xff"}'})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request_metadata"


def test_utf8_metadata_is_stored_as_sent(gateway, tenant, upstream):
    metadata = {"name": "é中😀"}

    response = _post(
        gateway,
        tenant.key,
        _body(),
        **{"X-Request-Metadata": json.dumps(metadata, ensure_ascii=False).encode()},
    )

    assert response.status_code == 200
    usage_ingest()
    assert UsageEvent.objects.get().request_metadata == metadata


def test_infinite_number_in_a_management_body_is_refused_like_metadata(world_a):
    raw = b'{"metadata": {"name": 1e999, "external_entity_id": "x"}, "models": []}'

    response = world_a.client().post("/v1/gateway/groups", raw, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "number_out_of_range"


@pytest.mark.parametrize("delta", ["reasoning", "tool_calls"])
def test_stream_of_uncounted_deltas_without_usage_is_still_billed(gateway, tenant, delta):
    fake = {"tokens": 5, "delta": delta, "no_usage": True}

    response = _post(gateway, tenant.key, _body(stream=True, fake=fake))

    assert response.status_code == 200 and _sse(response)[-1] == "[DONE]"
    usage_ingest()
    event = UsageEvent.objects.get()
    assert (event.status, event.output_tokens, event.usage_estimated) == ("completed", 5, True)


def test_stream_true_on_embeddings_is_still_billed(gateway, tenant):
    body = {"model": SLUG, "input": "one two three", "stream": True}

    response = httpx.post(
        f"{gateway.url}/v1/embeddings",
        json=body,
        headers={"Authorization": f"Bearer {tenant.key}"},
        timeout=30,
    )

    assert response.status_code == 200 and response.json()["model"] == SLUG
    usage_ingest()
    event = UsageEvent.objects.get()
    assert (event.status, event.input_tokens, event.usage_estimated) == ("completed", 3, False)


def test_oversized_upstream_answer_is_not_buffered_and_still_billed(gateway, tenant, settings):
    settings.GATEWAY_MAX_UPSTREAM_BODY_BYTES = 64 * 1024

    response = _post(gateway, tenant.key, _body(fake={"pad_bytes": 1024 * 1024}))

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "bad_gateway"
    usage_ingest()
    event = UsageEvent.objects.get()
    assert (event.status, event.http_status, event.usage_estimated) == ("cancelled", 502, True)


def test_oversized_upstream_error_body_is_not_buffered(gateway, tenant, settings):
    settings.GATEWAY_MAX_UPSTREAM_BODY_BYTES = 64 * 1024
    fake = {"status": 500, "body": json.dumps({"error": {"message": "x" * 1024 * 1024}})}

    response = _post(gateway, tenant.key, _body(fake=fake))

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "bad_gateway"


def test_oversized_upstream_sse_event_cannot_grow_the_relay_buffer(gateway, tenant, settings):
    settings.GATEWAY_MAX_UPSTREAM_EVENT_BYTES = 64 * 1024

    response = _post(gateway, tenant.key, _body(stream=True, fake={"pad_bytes": 1024 * 1024}))

    events = _sse(response)
    assert json.loads(events[-1])["error"]["code"] == "bad_gateway"
    assert "[DONE]" not in events
    usage_ingest()
    assert UsageEvent.objects.get().status == "cancelled"


@pytest.mark.parametrize("stream", [1, "true", [], {}], ids=["one", "string", "list", "object"])
def test_non_boolean_stream_cannot_make_the_gateway_buffer_a_stream(
    gateway, tenant, upstream, stream
):
    response = _post(gateway, tenant.key, _body(stream=stream))

    assert response.status_code == 400
    assert response.json()["error"] | {"message": ""} == {
        "message": "",
        "type": "invalid_request_error",
        "code": "invalid_parameter",
        "param": "stream",
    }
    assert upstream.requests == []


def test_crlf_split_across_reads_still_ends_each_event():
    relay = SseRelay(slug=SLUG, strip_usage=True, max_event_bytes=1024)
    event = b'data: {"choices": [{"delta": {"content": "hi"}}]}'

    out = relay.feed(event + b"\r\n\r") + relay.feed(b"\n" + b"data: [DONE]\r\n\r\n")

    assert out == event + b"\n\n"
    assert relay.done and relay.content_chunks == 1


def _metrics(gateway):
    return httpx.get(f"{gateway.url}/metrics", timeout=30).text


def test_unique_huge_model_strings_cannot_grow_metrics(gateway, tenant):
    before = _metrics(gateway)
    huge = [f"{uuid.uuid4().hex}{'m' * 1_000_000}" for _ in range(5)]
    unknown = [f"acme/{uuid.uuid4().hex}" for _ in range(20)]

    statuses = [_post(gateway, tenant.key, _body(model=model)).status_code for model in huge]
    codes = [_post(gateway, tenant.key, _body(model=m)).json()["error"]["code"] for m in unknown]
    after = _metrics(gateway)

    assert statuses == [400] * 5 and codes == ["model_not_found"] * 20
    assert not any(model[:32] in after for model in huge + unknown)
    assert 'slug="unknown"' in after
    assert len(after) - len(before) < 4096


def test_unknown_key_flood_cannot_evict_live_keys_or_grow_the_cache(monkeypatch):
    monkeypatch.setattr(ttl_cache, "MAX_ENTRIES", 50)
    monkeypatch.setattr(ttl_cache, "MAX_MISSES", 20)
    cache: ttl_cache.TtlCache[str] = ttl_cache.TtlCache(confirm=authcache.version_confirm)
    fills: list[str] = []

    async def lookup(key, value):
        async def fill():
            fills.append(key)
            return value

        return await cache.get(key, fill, lambda _: "ws")

    async def scenario():
        await lookup("live", "entry")
        for n in range(500):
            await lookup(f"unknown-{n}", None)
        return await lookup("live", "entry")

    assert asyncio.run(scenario()) == "entry"
    assert fills.count("live") == 1
    assert len(cache.slots) + len(cache.misses) <= 21


@pytest.mark.parametrize(
    "key",
    ["not-a-federated-key-but-long-enough", "sky_" + "A" * 8000, "gwm_abcdefghijkl.0123456789"],
    ids=["foreign-shape", "huge", "management-key"],
)
def test_malformed_keys_are_refused_without_a_lookup(gateway, tenant, query_log, key):  # noqa: F811
    response = _post(gateway, key, _body())

    assert response.status_code == 401
    assert [sql for sql in query_log if "keys_apikey" in sql] == []


@pytest.mark.parametrize(
    ("server", "code"),
    [
        # The gateway's worker stops reading the head past GATEWAY_MAX_REQUEST_HEAD_BYTES.
        ("gateway", "request_header_too_large"),
        # Under a server that lets the head through, the inference app refuses it.
        ("gateway_plain", "request_header_fields_too_large"),
    ],
)
def test_huge_request_headers_are_refused_and_never_relayed(
    server, code, request, tenant, upstream
):
    gateway = request.getfixturevalue(server)
    response = _post(gateway, tenant.key, _body(), **{"X-Padding": "a" * 1024 * 1024})

    assert response.status_code == 431
    assert response.json()["error"]["code"] == code
    assert upstream.requests == []
