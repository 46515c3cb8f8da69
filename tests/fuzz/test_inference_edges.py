"""Hand-made bad input on the inference routes: oversized, truncated, non-UTF-8 and deeply nested
JSON, wrong content types, huge headers. Always a 4xx in the envelope, never a 5xx."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.model_server import FakeModelServerThread
from tests.fuzz.conftest import assert_envelope
from tests.proxy.conftest import SLUG, GatewayThread, Tenant

CHAT = {"model": SLUG, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
CHAT_BYTES = json.dumps(CHAT).encode()


def post(http: httpx.Client, key: str, content: Any, **headers: str) -> httpx.Response:
    sent = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers}
    return http.post("/v1/chat/completions", content=content, headers=sent)


def nested(depth: int, open_: str = "[", close: str = "]") -> bytes:
    """`depth` nested containers holding nothing: [[[...]]]."""
    return (open_ * depth + close * depth).encode()


def with_messages(raw_messages: bytes) -> bytes:
    return (
        b'{"model": "' + SLUG.encode() + b'", "max_tokens": 2, "messages": ' + raw_messages + b"}"
    )


def test_a_body_over_the_limit_is_413(http: httpx.Client, tenant: Tenant, settings: Any) -> None:
    settings.GATEWAY_MAX_BODY_BYTES = 64 * 1024
    body = with_messages(json.dumps([{"role": "user", "content": "x" * 70_000}]).encode())

    response = post(http, tenant.key, body)

    assert response.status_code == 413
    assert assert_envelope(response)["code"] == "request_too_large"


def test_a_chunked_body_over_the_limit_is_413(
    http: httpx.Client, tenant: Tenant, settings: Any
) -> None:
    settings.GATEWAY_MAX_BODY_BYTES = 64 * 1024

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size is only known while reading
        yield b'{"model": "acme/llama", "messages": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    response = post(http, tenant.key, chunks())

    assert response.status_code == 413
    assert assert_envelope(response)["code"] == "request_too_large"


def test_a_body_just_over_the_default_limit_is_413(http: httpx.Client, tenant: Tenant) -> None:
    limit = 10 * 1024 * 1024
    padding = b" " * (limit + 1 - len(CHAT_BYTES))

    response = post(http, tenant.key, CHAT_BYTES + padding)

    assert response.status_code == 413
    assert assert_envelope(response)["code"] == "request_too_large"


@pytest.mark.parametrize("cut", [1, 10, len(CHAT_BYTES) // 2, len(CHAT_BYTES) - 1])
def test_a_truncated_body_is_400(http: httpx.Client, tenant: Tenant, cut: int) -> None:
    response = post(http, tenant.key, CHAT_BYTES[:cut])

    assert response.status_code == 400
    assert assert_envelope(response)["code"] == "invalid_json"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "acme/\xff\xfe", "messages": []}',
        '{"model": "acme/llama", "messages": [{"role": "user", "content": "\u00e9"}]}'.encode(
            "latin-1"
        ),
        b"\xc3\x28\xa0\xa1",
        b"\x00\x00\x00",
    ],
    ids=["invalid-utf8-in-string", "latin-1", "invalid-utf8", "nul-bytes"],
)
def test_a_body_that_is_not_utf8_is_400(http: httpx.Client, tenant: Tenant, raw: bytes) -> None:
    response = post(http, tenant.key, raw)

    assert response.status_code == 400
    assert assert_envelope(response)["code"] == "invalid_json"


def test_lone_surrogates_and_nul_escapes_never_cause_a_server_error(
    http: httpx.Client, tenant: Tenant
) -> None:
    raw = with_messages(b'[{"role": "user", "content": "\\ud800 \\u0000 \\udfff"}]')

    response = post(http, tenant.key, raw)

    assert response.status_code < 500, response.content
    if response.status_code >= 400:
        assert_envelope(response, passthrough=True)


@pytest.mark.parametrize(
    ("depth", "brackets"),
    [(100_000, "[]"), (100_000, "{}"), (5_000, "[]")],
    ids=["100k-arrays", "100k-objects", "5k-arrays"],
)
def test_a_deeply_nested_body_is_400(
    http: httpx.Client, tenant: Tenant, depth: int, brackets: str
) -> None:
    open_ = brackets[0]
    inner = nested(depth) if open_ == "[" else (b'{"a":' * depth + b"1" + b"}" * depth)

    response = post(http, tenant.key, with_messages(inner))

    assert response.status_code == 400, response.content[:300]
    assert assert_envelope(response)["type"] == "invalid_request_error"


def test_a_deeply_nested_top_level_array_is_400(http: httpx.Client, tenant: Tenant) -> None:
    response = post(http, tenant.key, nested(100_000))

    assert response.status_code == 400, response.content[:300]
    assert_envelope(response)


def test_a_nesting_depth_json_accepts_is_relayed_or_refused_cleanly(
    http: httpx.Client, tenant: Tenant, upstream: FakeModelServerThread
) -> None:
    body = with_messages(b'[{"role": "user", "content": ' + nested(900) + b"}]")

    response = post(http, tenant.key, body)

    # Either refused by the gateway with a 400, or relayed whole (the fake upstream itself may
    # choke on it: its answer is passed through); never the gateway's own failure.
    if response.status_code == 400 and not upstream.requests:
        assert_envelope(response)
    else:
        assert upstream.requests[-1].raw.count(b"[") >= 900
        assert response.json()["error"]["code"] != "internal_error"


def test_a_deeply_nested_metadata_header_is_400(http: httpx.Client, tenant: Tenant) -> None:
    response = post(http, tenant.key, CHAT_BYTES, **{"X-Request-Metadata": "[" * 2000 + "]" * 2000})

    assert response.status_code == 400, response.content[:300]
    assert assert_envelope(response)["code"] == "invalid_request_metadata"


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "application/jsonx",
        "",
        "application/octet-stream",
    ],
)
def test_a_body_that_is_not_declared_json_is_415(
    http: httpx.Client, tenant: Tenant, content_type: str
) -> None:
    response = post(http, tenant.key, CHAT_BYTES, **{"Content-Type": content_type})

    assert response.status_code == 415
    assert assert_envelope(response)["code"] == "unsupported_media_type"


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "APPLICATION/JSON"])
def test_json_content_type_variants_are_accepted(
    http: httpx.Client, tenant: Tenant, content_type: str
) -> None:
    response = post(http, tenant.key, CHAT_BYTES, **{"Content-Type": content_type})

    assert response.status_code == 200, response.content


def test_a_huge_authorization_header_is_401(http: httpx.Client, tenant: Tenant) -> None:
    headers = {"Authorization": "Bearer " + "k" * 12_000, "Content-Type": "application/json"}

    response = http.post("/v1/chat/completions", content=CHAT_BYTES, headers=headers)

    assert response.status_code == 401
    assert assert_envelope(response)["code"] == "invalid_api_key"


def test_metadata_over_4_kib_is_400(http: httpx.Client, tenant: Tenant) -> None:
    metadata = json.dumps({"pad": "m" * 5000})

    response = post(http, tenant.key, CHAT_BYTES, **{"X-Request-Metadata": metadata})

    assert response.status_code == 400
    assert assert_envelope(response)["code"] == "invalid_request_metadata"


def test_many_headers_are_served(http: httpx.Client, tenant: Tenant) -> None:
    extra = {f"X-Filler-{i}": "v" * 50 for i in range(80)}

    response = post(http, tenant.key, CHAT_BYTES, **extra)

    assert response.status_code == 200, response.content


def raw_request(gateway: GatewayThread, head: bytes, body: bytes = b"") -> bytes:
    """Send raw bytes on one connection; everything the server answered before closing."""
    port = int(gateway.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_headers_beyond_what_the_server_accepts_are_refused_without_a_5xx(
    gateway: GatewayThread, http: httpx.Client, tenant: Tenant
) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        + b"X-Huge: "
        + b"h" * 200_000
        + b"\r\n"
        + f"Authorization: Bearer {tenant.key}\r\nContent-Length: {len(CHAT_BYTES)}\r\n".encode()
        + b"Connection: close\r\n\r\n"
    )

    answer = raw_request(gateway, head, CHAT_BYTES)
    after = post(http, tenant.key, CHAT_BYTES)

    assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
    assert after.status_code == 200


def test_non_latin1_header_bytes_never_cause_a_server_error(
    gateway: GatewayThread, tenant: Tenant
) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        + 'X-Request-Metadata: {"name": "\u00e9\u4e2d\ud83d\ude00"}\r\n'.encode(
            "utf-8", "surrogatepass"
        )
        + f"Authorization: Bearer {tenant.key}\r\nContent-Length: {len(CHAT_BYTES)}\r\n".encode()
        + b"Connection: close\r\n\r\n"
    )

    answer = raw_request(gateway, head, CHAT_BYTES)

    status = int(answer.split(b" ", 2)[1])
    assert status < 500, answer[:500]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/chat/completions", 405, "method_not_allowed"),
        ("PUT", "/v1/embeddings", 405, "method_not_allowed"),
        ("POST", "/v1/models", 405, "method_not_allowed"),
        ("GET", "/v1/responses", 405, "method_not_allowed"),
        # Stored responses are not served through the gateway: no retrieval, no cancel.
        ("GET", "/v1/responses/resp_123", 404, "unknown_route"),
        ("POST", "/v1/responses/resp_123/cancel", 404, "unknown_route"),
        ("POST", "/v1/models/acme/llama", 405, "method_not_allowed"),
        ("POST", "/v1/chat/completions/../../admin/", 404, "unknown_route"),
        ("GET", "/v1/%ff%fe", 404, "unknown_route"),
    ],
)
def test_wrong_methods_and_unknown_paths_are_enveloped(
    http: httpx.Client, tenant: Tenant, method: str, path: str, status: int, code: str
) -> None:
    headers = {"Authorization": f"Bearer {tenant.key}", "Content-Type": "application/json"}

    response = http.request(method, path, content=CHAT_BYTES, headers=headers)

    assert response.status_code == status, response.content
    assert assert_envelope(response)["code"] == code
