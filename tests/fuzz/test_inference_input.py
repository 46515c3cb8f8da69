"""Generated bodies, headers, slugs and raw bytes on the inference routes: never a 5xx, every error
in the envelope. Bounded here; `make fuzz` runs many more examples."""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from tests.fakes.model_server import FakeModelServerThread
from tests.fuzz.conftest import assert_envelope, fuzz_settings
from tests.fuzz.strategies import BODIES, HEADER_NAMES, HEADER_VALUES, JSON, MODELS
from tests.proxy.conftest import SLUG, Tenant

ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
CHAT = {"model": SLUG, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def post(http: httpx.Client, key: str, path: str, content: bytes, **headers: Any) -> httpx.Response:
    """POST raw bytes as JSON with the key; the whole response (streams included) is read."""
    sent = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers}
    return http.post(path, content=content, headers=sent)


def assert_sane(response: httpx.Response, *, passthrough: bool = False) -> None:
    """No 5xx; an error is the envelope; a success is a JSON body or an event stream."""
    assert response.status_code < 500, (response.status_code, response.content[:500])
    if response.status_code >= 400:
        assert_envelope(response, passthrough=passthrough)
    elif response.headers["content-type"].startswith("text/event-stream"):
        assert response.content.startswith(b"data: ")
    else:
        assert isinstance(response.json(), dict)


def test_generated_bodies_never_cause_a_server_error(
    http: httpx.Client, tenant: Tenant, upstream: FakeModelServerThread
) -> None:
    @given(path=st.sampled_from(ROUTES), body=BODIES)
    @fuzz_settings()
    def run(path: str, body: dict[str, Any]) -> None:
        calls = len(upstream.requests)

        response = post(http, tenant.key, path, json.dumps(body).encode())

        assert_sane(response, passthrough=len(upstream.requests) > calls)

    run()


def test_generated_model_names_are_a_404_or_a_400(http: httpx.Client, tenant: Tenant) -> None:
    @given(model=MODELS.filter(lambda m: m != SLUG))
    @fuzz_settings()
    def run(model: Any) -> None:
        body = {**CHAT, "model": model}

        response = post(http, tenant.key, "/v1/chat/completions", json.dumps(body).encode())

        error = assert_envelope(response)
        assert error["code"] in {"model_not_found", "missing_model"}

    run()


def test_generated_headers_never_cause_a_server_error(http: httpx.Client, tenant: Tenant) -> None:
    @given(headers=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=6))
    @fuzz_settings()
    def run(headers: dict[str, bytes]) -> None:
        sent: dict[str, Any] = {
            "Authorization": f"Bearer {tenant.key}",
            "Content-Type": "application/json",
        }
        sent.update(headers)

        response = http.post("/v1/chat/completions", content=json.dumps(CHAT), headers=sent)

        assert_sane(response)

    run()


def test_generated_metadata_headers_are_accepted_or_a_400(
    http: httpx.Client, tenant: Tenant
) -> None:
    values = HEADER_VALUES | JSON.map(lambda v: json.dumps(v).encode())

    @given(value=values)
    @fuzz_settings()
    def run(value: bytes) -> None:
        response = post(
            http,
            tenant.key,
            "/v1/chat/completions",
            json.dumps(CHAT).encode(),
            **{"X-Request-Metadata": value},
        )

        assert_sane(response)
        if response.status_code == 400:
            assert response.json()["error"]["code"] == "invalid_request_metadata"

    run()


def test_generated_authorization_values_are_a_401(http: httpx.Client, tenant: Tenant) -> None:
    @given(value=HEADER_VALUES)
    @fuzz_settings()
    def run(value: bytes) -> None:
        headers: dict[str, Any] = {"Authorization": value, "Content-Type": "application/json"}

        response = http.post("/v1/chat/completions", content=json.dumps(CHAT), headers=headers)

        assert response.status_code == 401
        assert assert_envelope(response)["type"] == "authentication_error"

    run()


def test_generated_raw_bytes_are_a_400(http: httpx.Client, tenant: Tenant) -> None:
    @given(path=st.sampled_from(ROUTES), raw=st.binary(min_size=1, max_size=400))
    @fuzz_settings()
    def run(path: str, raw: bytes) -> None:
        response = post(http, tenant.key, path, raw)

        assert_sane(response)

    run()
