"""Calls an endpoint's targets in the order of its strategy until one gives a usable answer.

A target is skipped for the next one only while nothing has been sent to the client: refused or
timed-out connections, answers too large to hold, and the upstream statuses of FALLBACK_STATUSES.
Connection failures, timeouts and those statuses also count against the target's circuit breaker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp

from gateway_project.kernel.errors import GatewayError, tracebacks_drop
from routing.balancing import Attempt, attempt_plan
from routing.circuit import circuit_failure, circuit_probe, circuit_states, circuit_success
from routing.errors import (
    UpstreamAnswered,
    bad_gateway,
    credential_missing,
    gateway_timeout,
    responses_unsupported,
    upstream_too_large,
)
from routing.inference_request import InferenceRequest
from routing.jsonwire import json_write
from routing.metrics import upstream_errors
from routing.models import Provider
from routing.targets import ResolvedTarget
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
# Answers of a BASETEN deployment without the Responses API.
UNSUPPORTED_ROUTE_STATUSES = frozenset({404, 405})


@dataclass(frozen=True, slots=True)
class Pick:
    """The outcome of upstream_pick: a usable response (with a stream's first bytes), or the
    error that ends the request; `target` is the last target tried ("" when none was)."""

    target: str
    response: aiohttp.ClientResponse | None = None
    first: bytes = b""
    first_byte_at: float | None = None  # time.perf_counter() when a stream's first bytes came
    error: GatewayError | None = None


def _payload(request: InferenceRequest, target: ResolvedTarget, *, usage_option: bool) -> bytes:
    """The body the upstream gets: the parse the limits read, with the target's model."""
    out = dict(request.body)
    out["model"] = target.upstream_model
    if usage_option:
        options = out.get("stream_options")
        out["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    return json_write(out, strict=request.strict_json)


async def _attempt(
    request: InferenceRequest, attempt: Attempt
) -> tuple[aiohttp.ClientResponse, bytes | None]:
    target = attempt.target
    url = target.base_url + request.path.removeprefix("/v1")
    sent = upstream_headers(
        client_headers=request.headers, credential=target.api_key, request_id=request.request_id
    )
    # The Responses API reports usage in its last event unasked (it has no include_usage).
    usage_option = request.stream and request.kind != "responses"
    response = await upstream_open(
        url=url,
        body=_payload(request, target, usage_option=usage_option),
        headers=sent,
        allowlist=target.allowlist,
        timeout=attempt.timeout,
    )
    if not (usage_option and response.status == 400):
        return response, None
    data = await _body_or_close(response)
    if b"stream_options" not in data:
        return response, data
    # Some servers refuse stream_options: ask once more without it and estimate usage instead.
    response.release()
    payload = _payload(request, target, usage_option=False)
    retry = await upstream_open(
        url=url, body=payload, headers=sent, allowlist=target.allowlist, timeout=attempt.timeout
    )
    return retry, None


async def _body_or_close(response: aiohttp.ClientResponse) -> bytes:
    """The whole body; a read that fails (too slow, too large) drops the connection."""
    try:
        return await body_read(response)
    except BaseException:
        response.close()
        raise


async def _first_chunk(response: aiohttp.ClientResponse, timeout: float) -> bytes:
    """A stream's first bytes: until they arrive nothing is sent, so a failure can fall back."""
    try:
        return await chunk_read(response.content, first=True, timeout=timeout)
    except BaseException:
        response.close()
        raise


async def _answer(
    request: InferenceRequest,
    attempt: Attempt,
    response: aiohttp.ClientResponse,
    data: bytes | None,
) -> Pick:
    """A usable response (with a stream's first bytes), or the upstream's error raised."""
    label = _label(attempt.target)
    if response.status < 300:
        if not request.stream:
            return Pick(label, response)
        first = await _first_chunk(response, attempt.timeout)
        return Pick(label, response, first, time.perf_counter())
    raw = data if data is not None else await _body_or_close(response)
    response.release()
    raise UpstreamAnswered(response.status, raw, response.headers.get("Retry-After"))


def _label(target: ResolvedTarget) -> str:
    return f"{target.provider}#{target.position}"


def _unsupported(
    request: InferenceRequest, target: ResolvedTarget, answered: UpstreamAnswered
) -> bool:
    return (
        request.kind == "responses"
        and target.provider == Provider.BASETEN
        and answered.status in UNSUPPORTED_ROUTE_STATUSES
    )


async def _try(request: InferenceRequest, attempt: Attempt) -> Pick:
    """One target: its usable answer, else a GatewayError saying why (UpstreamAnswered for an
    upstream error that ends the request); counts toward the target's breaker."""
    target, slug = attempt.target, request.slug
    try:
        if target.credential_missing:
            raise credential_missing(slug)
        picked = await _answer(request, attempt, *await _attempt(request, attempt))
    except UpstreamTimeout as exc:
        await circuit_failure(target, slug=slug)
        raise gateway_timeout() from exc
    except (aiohttp.ClientError, OSError) as exc:
        await circuit_failure(target, slug=slug)
        raise bad_gateway() from exc
    except UpstreamRefused as exc:
        raise bad_gateway() from exc
    except UpstreamTooLarge as exc:
        raise upstream_too_large() from exc
    except UpstreamAnswered as answered:
        if answered.status in FALLBACK_STATUSES:
            await circuit_failure(target, slug=slug)
        else:
            await circuit_success(target, slug=slug)
        if _unsupported(request, target, answered):
            raise responses_unsupported(slug) from answered
        raise
    await circuit_success(target, slug=slug)
    return picked


def _falls_back(failure: GatewayError) -> bool:
    if isinstance(failure, UpstreamAnswered):
        return failure.status in FALLBACK_STATUSES
    return True


async def upstream_pick(request: InferenceRequest) -> Pick:
    """The first usable upstream response; falls back only on failures nothing was sent for."""
    failure: GatewayError = bad_gateway("The endpoint has no target.")
    endpoint, slug, tried = request.endpoint, request.slug, ""
    states = await circuit_states(endpoint.targets, slug=slug)
    for attempt in attempt_plan(endpoint, states):
        target = attempt.target
        if attempt.probe and not await circuit_probe(target, slug=slug, lease=attempt.timeout + 5):
            continue
        tried = _label(target)
        try:
            return await _try(request, attempt)
        except GatewayError as exc:
            tracebacks_drop(exc)  # kept for later: no cycle through this frame
            if not _falls_back(exc):
                return Pick(tried, error=exc)
            failure = exc
        upstream_errors.labels(failure.code, slug).inc()
    return Pick(tried, error=failure)
