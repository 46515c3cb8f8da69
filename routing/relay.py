"""The fourth step of an inference request: the chosen upstream's answer relayed to the client,
JSON or SSE, up to (not including) its last bytes, which go out once its usage is recorded."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from gateway_project.kernel import tracing
from gateway_project.kernel.errors import GatewayError
from gateway_project.kernel.hot_settings import hot
from routing.client_connection import DisconnectWatch, Responder
from routing.errors import bad_gateway, gateway_timeout, upstream_too_large
from routing.failover import Pick, upstream_pick
from routing.inference_request import InferenceRequest
from routing.jsonwire import json_value
from routing.metrics import streams_in_flight
from routing.streaming import EventTooLarge, SseRelay, model_rewrite, sse_error
from routing.upstream import UpstreamTimeout, UpstreamTooLarge, body_read, chunk_read
from routing.usage import Usage, usage_estimate, usage_parse

_DONE = b"data: [DONE]\n\n"
CLIENT_GONE = 499


@dataclass(frozen=True, slots=True)
class RelayOutcome:
    """What the relay left to do and to record: the usage to bill (None: nothing billable) and
    what the client still gets (a JSON answer, a stream's last bytes, or an error)."""

    status: int
    target: str
    upstream_ms: float
    first_byte_ms: float | None = None
    usage: Usage | None = None
    event_status: str = "completed"  # completed | cancelled
    answer: bytes | None = None  # a whole JSON answer, not sent yet
    last: bytes | None = None  # the bytes that end a started stream
    error: GatewayError | None = None  # sent instead, in the error envelope


async def relay_run(
    *, request: InferenceRequest, responder: Responder, watch: DisconnectWatch
) -> RelayOutcome:
    """Call the upstream and relay its answer; a client that leaves midway ends it (499)."""
    started = time.perf_counter()
    pick: Pick | None = None
    relay = _relay_for(request)
    try:
        with tracing.span("upstream"):
            pick = await upstream_pick(request)
        if pick.response is None:
            failure = pick.error or bad_gateway()
            return RelayOutcome(failure.status, pick.target, _since_ms(started), error=failure)
        if relay is not None and _is_json_answer(pick.response):
            relay = None  # an upstream that ignored `stream`: one JSON body, billed as such
        if relay is not None:
            return await _stream(request, pick, relay, responder, watch, started)
        return await _json(request, pick, watch, started)
    except asyncio.CancelledError:
        if not watch.absorb():
            raise
        return _client_gone(request, pick, relay, started)
    finally:
        if pick is not None and pick.response is not None:
            pick.response.close()  # stops the upstream generating (vLLM frees the sequence)


async def relay_finish(responder: Responder, outcome: RelayOutcome) -> None:
    """Send what the client still gets (after the usage record is durable)."""
    if outcome.error is not None:
        raise outcome.error
    if outcome.answer is not None:
        await responder.json(outcome.status, outcome.answer)
    elif outcome.last is not None:
        await responder.body(outcome.last)


def _relay_for(request: InferenceRequest) -> SseRelay | None:
    if not request.stream:
        return None
    return SseRelay(
        slug=request.slug,
        # A Responses stream's usage is part of its last event, which the client needs.
        strip_usage=request.kind != "responses" and not _usage_asked(request),
        max_event_bytes=hot.GATEWAY_MAX_UPSTREAM_EVENT_BYTES,
    )


def _is_json_answer(response: aiohttp.ClientResponse) -> bool:
    kind = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def _usage_asked(request: InferenceRequest) -> bool:
    options = request.body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _since_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def _json(
    request: InferenceRequest, pick: Pick, watch: DisconnectWatch, started: float
) -> RelayOutcome:
    assert pick.response is not None
    try:
        data = await body_read(pick.response, head=pick.first)
    except UpstreamTooLarge:
        return _oversized(request, pick, watch, started)
    upstream_ms = _since_ms(started)
    data = model_rewrite(data, slug=request.slug)
    usage = _json_usage(data) or usage_estimate(
        body_bytes=request.body_bytes, output_chunks=len(data) // 4
    )
    watch.disarm()
    return RelayOutcome(
        pick.response.status,
        pick.target,
        upstream_ms,
        first_byte_ms=_since_ms(request.started),
        usage=usage,
        answer=data,
    )


def _oversized(
    request: InferenceRequest, pick: Pick, watch: DisconnectWatch, started: float
) -> RelayOutcome:
    """A success too large to hold: the client gets a 502, the upstream's work is still billed
    (estimated as if the answer stopped at the bound, like a request cut off)."""
    limit = hot.GATEWAY_MAX_UPSTREAM_BODY_BYTES
    watch.disarm()
    return RelayOutcome(
        502,
        pick.target,
        _since_ms(started),
        usage=usage_estimate(body_bytes=request.body_bytes, output_chunks=limit // 4),
        event_status="cancelled",
        error=upstream_too_large(),
    )


def _json_usage(data: bytes) -> Usage | None:
    try:
        parsed = json_value(data)
    except (ValueError, RecursionError):
        return None
    return usage_parse(parsed.get("usage")) if isinstance(parsed, dict) else None


async def _stream(
    request: InferenceRequest,
    pick: Pick,
    relay: SseRelay,
    responder: Responder,
    watch: DisconnectWatch,
    started: float,
) -> RelayOutcome:
    response = pick.response
    assert response is not None
    content_type = response.headers.get("Content-Type", "text/event-stream").encode()
    head = [
        (b"content-type", content_type),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
    ]
    await responder.start(response.status, head)
    streams_in_flight.inc()
    try:
        failure = await _pump(response, pick.first, relay, responder)
    finally:
        streams_in_flight.dec()
    upstream_ms = _since_ms(started)
    last = relay.rest()
    usage = relay.usage or usage_estimate(
        body_bytes=request.body_bytes, output_chunks=relay.content_chunks
    )
    watch.disarm()
    if failure is not None:
        last += sse_error(message=failure.message, type=failure.type, code=failure.code)
    elif relay.done:
        last += _DONE
    # The upstream accepted and answered: billed even when no delta was recognised.
    return RelayOutcome(
        response.status,
        pick.target,
        upstream_ms,
        first_byte_ms=_first_byte_ms(request, pick),
        usage=usage,
        event_status="completed" if failure is None else "cancelled",
        last=last,
    )


def _first_byte_ms(request: InferenceRequest, pick: Pick | None) -> float | None:
    if pick is None or pick.first_byte_at is None:
        return None
    return (pick.first_byte_at - request.started) * 1000


async def _pump(
    response: aiohttp.ClientResponse, first: bytes, relay: SseRelay, responder: Responder
) -> GatewayError | None:
    reader, data = response.content, first
    while data:
        out, oversized = _feed(relay, data)
        if out:
            await responder.body(out, more=True)
        if oversized is not None:
            return oversized
        try:
            data = await chunk_read(reader)
        except UpstreamTimeout:
            return gateway_timeout()
        except aiohttp.ClientError:
            return bad_gateway("The upstream stream broke off.")
    return None


def _feed(relay: SseRelay, data: bytes) -> tuple[bytes, GatewayError | None]:
    try:
        return relay.feed(data), None
    except EventTooLarge:
        limit = hot.GATEWAY_MAX_UPSTREAM_EVENT_BYTES
        return b"", bad_gateway(f"The upstream sent an event larger than {limit} bytes.")


def _client_gone(
    request: InferenceRequest, pick: Pick | None, relay: SseRelay | None, started: float
) -> RelayOutcome:
    if pick is not None and pick.response is not None:
        pick.response.close()  # stops the upstream generating (vLLM frees the sequence)
    usage = None
    if relay is not None and (relay.usage is not None or relay.content_chunks):
        usage = relay.usage or usage_estimate(
            body_bytes=request.body_bytes, output_chunks=relay.content_chunks
        )
    return RelayOutcome(
        CLIENT_GONE,
        pick.target if pick is not None else "",
        _since_ms(started),
        first_byte_ms=_first_byte_ms(request, pick),
        usage=usage,
        event_status="cancelled",
    )
