"""Calls an endpoint's targets in the order of its strategy until one gives a usable answer.

A target is skipped for the next one only while nothing has been sent to the client: refused or
timed-out connections, answers too large to hold, and the upstream statuses of FALLBACK_STATUSES.
Connection failures, timeouts and those statuses also count against the target's circuit breaker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway_project.kernel import tracing
from gateway_project.kernel.errors import GatewayError, tracebacks_drop
from routing.balancing import Attempt, attempt_plan
from routing.circuit import (
    circuit_failure,
    circuit_probe,
    circuit_states,
    circuit_states_known,
    circuit_success,
)
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


@dataclass(frozen=True, slots=True)
class UpstreamDraft:
    """A request's attempt plan and its first attempt's URL, headers and body, built while its
    admission is in flight (see `upstream_draft`)."""

    plan: list[Attempt]
    url: str
    headers: dict[str, str]
    body: bytes


def upstream_draft(request: InferenceRequest, caps: dict[str, Any]) -> None:
    """Build the request's UpstreamDraft, the body with the completion caps its admission will
    add (`caps`): run `meanwhile` the admission waits for Redis. Nothing is drafted when a
    breaker's state is not known here (it is read from Redis in line)."""
    endpoint = request.endpoint
    states = circuit_states_known(endpoint.targets)
    if states is None:
        return
    plan = attempt_plan(endpoint, states)
    if not plan:
        return
    target = plan[0].target
    request.draft_set(
        UpstreamDraft(
            plan,
            _url(request, target),
            _headers(request, target),
            _payload(request, target, usage_option=_usage_option(request), caps=caps),
        )
    )


def _url(request: InferenceRequest, target: ResolvedTarget) -> str:
    return target.base_url + request.path.removeprefix("/v1")


def _headers(request: InferenceRequest, target: ResolvedTarget) -> dict[str, str]:
    return upstream_headers(
        client_headers=request.headers, credential=target.api_key, request_id=request.request_id
    )


def _usage_option(request: InferenceRequest) -> bool:
    # The Responses API reports usage in its last event unasked (it has no include_usage).
    return request.stream and request.kind != "responses"


def _payload(
    request: InferenceRequest,
    target: ResolvedTarget,
    *,
    usage_option: bool,
    caps: dict[str, Any] | None = None,
) -> bytes:
    """The body the upstream gets: the parse the limits read (plus the caps its admission adds,
    when it is drafted before they are), with the target's model."""
    out = dict(request.body)
    if caps:
        out.update(caps)
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
    target, draft = attempt.target, request.draft
    usage_option = _usage_option(request)
    if draft is not None and draft.plan[0] is attempt:
        url, sent, body = draft.url, draft.headers, draft.body
    else:
        url, sent = _url(request, target), _headers(request, target)
        body = _payload(request, target, usage_option=usage_option)
    tracing.headers_inject(sent)  # W3C traceparent when tracing is on
    response = await upstream_open(
        url=url,
        body=body,
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
    slug, tried = request.slug, ""
    try:
        for attempt in await _plan(request):
            target = attempt.target
            lease = attempt.timeout + 5
            if attempt.probe and not await circuit_probe(target, slug=slug, lease=lease):
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
    finally:
        request.draft_set(None)  # its body is not held for the rest of a long stream


async def _plan(request: InferenceRequest) -> list[Attempt]:
    """The drafted attempt plan, else one from the breakers' states."""
    draft: UpstreamDraft | None = request.draft
    if draft is not None:
        return draft.plan
    endpoint = request.endpoint
    return attempt_plan(endpoint, await circuit_states(endpoint.targets, slug=request.slug))
