"""Calls an endpoint's targets in priority order until one gives a usable answer.

A target is skipped for the next one only while nothing has been sent to the client: refused or
timed-out connections, answers too large to hold, and the upstream statuses of FALLBACK_STATUSES.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from gateway_project.kernel.errors import GatewayError
from routing.call import Call
from routing.errors import (
    CredentialMissing,
    UpstreamAnswered,
    bad_gateway,
    credential_missing,
    gateway_timeout,
    upstream_too_large,
)
from routing.metrics import upstream_errors
from routing.targets import ResolvedEndpoint, ResolvedTarget
from routing.upstream import (
    UpstreamRefused,
    UpstreamTimeout,
    UpstreamTooLarge,
    body_read,
    chunk_read,
    upstream_headers,
    upstream_open,
)

FALLBACK_STATUSES = frozenset({429, 502, 503, 504})


def _payload(body: dict[str, Any], target: ResolvedTarget, *, usage_option: bool) -> bytes:
    out = dict(body)
    out["model"] = target.upstream_model
    if usage_option:
        options = out.get("stream_options")
        out["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    return json.dumps(out).encode()


async def _attempt(
    call: Call, target: ResolvedTarget, body: dict[str, Any], headers: dict[str, str]
) -> tuple[aiohttp.ClientResponse, bytes | None]:
    url = target.base_url + call.path.removeprefix("/v1")
    sent = upstream_headers(
        client_headers=headers, credential=target.api_key, request_id=call.request_id
    )
    response = await upstream_open(
        url=url,
        body=_payload(body, target, usage_option=call.stream),
        headers=sent,
        allowlist=target.allowlist,
    )
    if not (call.stream and response.status == 400):
        return response, None
    data = await _body_or_close(response)
    if b"stream_options" not in data:
        return response, data
    # Some servers refuse stream_options: ask once more without it and estimate usage instead.
    response.release()
    payload = _payload(body, target, usage_option=False)
    retry = await upstream_open(url=url, body=payload, headers=sent, allowlist=target.allowlist)
    return retry, None


async def _body_or_close(response: aiohttp.ClientResponse) -> bytes:
    """The whole body; a read that fails (too slow, too large) drops the connection."""
    try:
        return await body_read(response)
    except BaseException:
        response.close()
        raise


async def _first_chunk(call: Call, response: aiohttp.ClientResponse) -> bytes:
    """A stream's first bytes: until they arrive nothing is sent, so a failure can fall back."""
    try:
        first = await chunk_read(response.content, first=True)
    except BaseException:
        response.close()
        raise
    call.first_byte_ms = call.elapsed_ms()
    return first


async def _answer(
    call: Call, response: aiohttp.ClientResponse, data: bytes | None
) -> tuple[aiohttp.ClientResponse, bytes]:
    """A usable response (with a stream's first bytes), or the upstream's error raised."""
    if response.status < 300:
        return response, (await _first_chunk(call, response) if call.stream else b"")
    raw = data if data is not None else await _body_or_close(response)
    response.release()
    raise UpstreamAnswered(response.status, raw, response.headers.get("Retry-After"))


async def upstream_pick(
    call: Call, endpoint: ResolvedEndpoint, body: dict[str, Any], headers: dict[str, str]
) -> tuple[aiohttp.ClientResponse, bytes]:
    """The first usable upstream response; falls back only on failures nothing was sent for."""
    failure: GatewayError = bad_gateway("The endpoint has no target.")
    for target in endpoint.targets:
        call.target = f"{target.provider}#{target.position}"
        try:
            if target.credential_missing:
                raise credential_missing(call.slug)
            return await _answer(call, *await _attempt(call, target, body, headers))
        except UpstreamTimeout:
            failure = gateway_timeout()
        except (aiohttp.ClientError, OSError, UpstreamRefused):
            failure = bad_gateway()
        except UpstreamTooLarge:
            failure = upstream_too_large()
        except UpstreamAnswered as answered:
            if answered.status not in FALLBACK_STATUSES:
                raise
            failure = answered
        except CredentialMissing as missing:
            failure = missing
        upstream_errors.labels(failure.code, call.slug).inc()
    raise failure
