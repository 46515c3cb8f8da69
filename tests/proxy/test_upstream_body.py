"""What the upstream receives is the body the limits read: one parse, written back, so no key
spelled twice, escaped or nested can mean one thing to the gateway and another to the model
server."""

from __future__ import annotations

import json

import httpx

from tests.proxy.conftest import SLUG, UPSTREAM_MODEL

CHAT = "/v1/chat/completions"


def _post(gateway, key: str, raw: bytes) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return httpx.post(f"{gateway.url}{CHAT}", content=raw, headers=headers, timeout=30)


def _received(upstream) -> tuple[bytes, dict]:
    [request] = upstream.requests
    return request.raw, request.json


def _keys(raw: bytes) -> list[str]:
    """The top-level keys of a JSON object in the order sent, duplicates kept."""
    return [key for key, _ in json.loads(raw, object_pairs_hook=lambda pairs: pairs)]


def test_a_model_key_sent_twice_reaches_the_upstream_once_as_the_target_model(
    gateway, token_limited, upstream
):
    raw = (
        b'{"model": "other/free", "messages": [{"role": "user", "content": "hi"}], '
        b'"model": "' + SLUG.encode() + b'"}'
    )

    response = _post(gateway, token_limited.key, raw)

    assert response.status_code == 200
    sent, body = _received(upstream)
    assert _keys(sent).count("model") == 1
    assert body["model"] == UPSTREAM_MODEL
    assert b"other/free" not in sent


def test_a_cap_sent_twice_reaches_the_upstream_as_the_value_the_limits_reserved(
    gateway, token_limited, upstream
):
    raw = (
        b'{"max_tokens": 100000, "model": "' + SLUG.encode() + b'", '
        b'"messages": [{"role": "user", "content": "hi"}], "max_tokens": 7}'
    )

    response = _post(gateway, token_limited.key, raw)

    assert response.status_code == 200
    sent, body = _received(upstream)
    assert _keys(sent).count("max_tokens") == 1
    assert body["max_tokens"] == 7
    assert response.json()["usage"]["completion_tokens"] <= 7


def test_an_escaped_model_key_is_read_and_replaced_like_a_plain_one(
    gateway, token_limited, upstream
):
    raw = (
        b'{"mod\\u0065l": "' + SLUG.encode() + b'", '
        b'"messages": [{"role": "user", "content": "hi"}]}'
    )

    response = _post(gateway, token_limited.key, raw)

    assert response.status_code == 200
    sent, body = _received(upstream)
    assert _keys(sent)[:2] == ["model", "messages"]
    assert b"\\u0065" not in sent
    assert body["model"] == UPSTREAM_MODEL


def test_nested_model_keys_and_unicode_escapes_pass_through_unchanged(
    gateway, token_limited, upstream
):
    message = {"role": "user", "content": [{"type": "text", "text": 'say "model": \u00e9\u4e2d'}]}
    tool = {
        "type": "function",
        "function": {"name": "pick", "parameters": {"properties": {"model": {"type": "string"}}}},
    }
    body = {"model": SLUG, "messages": [message], "tools": [tool], "metadata": {"model": "x"}}

    response = _post(gateway, token_limited.key, json.dumps(body).encode())

    assert response.status_code == 200
    _, received = _received(upstream)
    assert received["messages"] == [message]
    assert received["tools"] == [tool]
    assert received["metadata"] == {"model": "x"}
    assert received["model"] == UPSTREAM_MODEL


def test_a_content_part_type_sent_twice_reaches_the_upstream_as_the_limits_counted_it(
    gateway, token_limited, upstream
):
    part = b'{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}, "type": "text"}'
    raw = (
        b'{"model": "' + SLUG.encode() + b'", '
        b'"messages": [{"role": "user", "content": [' + part + b"]}]}"
    )

    response = _post(gateway, token_limited.key, raw)

    assert response.status_code == 200
    sent, body = _received(upstream)
    [sent_part] = body["messages"][0]["content"]
    assert sent_part["type"] == "text"
    assert sent.count(b'"type"') == 1


def test_a_body_only_the_lenient_parser_reads_is_written_back_the_same_way(
    gateway, token_limited, upstream
):
    raw = (
        b'{"model": "' + SLUG.encode() + b'", "temperature": NaN, '
        b'"seed": 123456789012345678901234567890, '
        b'"messages": [{"role": "user", "content": "hi"}]}'
    )

    response = _post(gateway, token_limited.key, raw)

    assert response.status_code == 200
    sent, _ = _received(upstream)
    assert b'"temperature":NaN' in sent
    assert b'"seed":123456789012345678901234567890' in sent


def test_a_large_body_is_relayed_whole(gateway, token_limited, upstream):
    text = "x" * 2_000_000
    body = {"model": SLUG, "messages": [{"role": "user", "content": text}], "max_tokens": 3}

    response = _post(gateway, token_limited.key, json.dumps(body).encode())

    assert response.status_code == 200
    _, received = _received(upstream)
    assert received["messages"][0]["content"] == text
    assert received["max_tokens"] == 3
