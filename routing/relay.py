"""Relays the chosen upstream's answer to the client, JSON or SSE, and records its usage event."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any, NoReturn

import aiohttp
from django.conf import settings

from billing.services.usage import usage_event_record
from gateway_project.kernel import tracing
from gateway_project.kernel.errors import GatewayError
from gateway_project.kernel.ids import new_ulid
from routing.call import Call
from routing.client_connection import DisconnectWatch, Responder
from routing.errors import bad_gateway, gateway_timeout, upstream_too_large
from routing.failover import upstream_pick
from routing.journal import INFLIGHT_KEY, journal
from routing.metrics import streams_in_flight
from routing.pricing import cost_wire
from routing.redis_pool import main_redis
from routing.streaming import EventTooLarge, SseRelay, model_rewrite, sse_error
from routing.targets import ResolvedEndpoint
from routing.upstream import UpstreamTimeout, UpstreamTooLarge, body_read, chunk_read
from routing.usage import Usage, usage_estimate, usage_parse

_DONE = b"data: [DONE]\n\n"


async def relay_run(
    *,
    call: Call,
    endpoint: ResolvedEndpoint,
    body: dict[str, Any],
    body_bytes: int,
    headers: dict[str, str],
    responder: Responder,
    watch: DisconnectWatch,
) -> None:
    """Upstream call and relay; sets call.usage/event_status when an event was recorded."""
    started = time.perf_counter()
    response: aiohttp.ClientResponse | None = None
    relay = _relay_for(call, body)
    try:
        with tracing.span("upstream"):
            response, first = await upstream_pick(call, endpoint, body, headers)
        if relay is not None and _is_json_answer(response):
            relay = None  # an upstream that ignored `stream`: one JSON body, billed as such
        if relay is not None:
            await _stream(call, response, first, relay, body_bytes, responder, watch, started)
        else:
            await _json(call, response, first, body_bytes, responder, watch, started)
    except asyncio.CancelledError:
        if not watch.absorb():
            raise
        await _client_gone(call, response, relay, body_bytes, started)
    finally:
        if response is not None:
            response.close()
        call.upstream_ms = call.upstream_ms or (time.perf_counter() - started) * 1000


def _relay_for(call: Call, body: dict[str, Any]) -> SseRelay | None:
    if not call.stream:
        return None
    return SseRelay(
        slug=call.slug,
        # A Responses stream's usage is part of its last event, which the client needs.
        strip_usage=call.kind != "responses" and not _usage_asked(body),
        max_event_bytes=settings.GATEWAY_MAX_UPSTREAM_EVENT_BYTES,
    )


def _is_json_answer(response: aiohttp.ClientResponse) -> bool:
    kind = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def _usage_asked(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _since_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def _json(
    call: Call,
    response: aiohttp.ClientResponse,
    first: bytes,
    body_bytes: int,
    responder: Responder,
    watch: DisconnectWatch,
    started: float,
) -> None:
    try:
        data = await body_read(response, head=first)
    except UpstreamTooLarge:
        await _oversized(call, body_bytes, watch, started)
    call.upstream_ms = _since_ms(started)
    call.first_byte_ms = call.elapsed_ms()
    data = model_rewrite(data, slug=call.slug)
    call.usage = _json_usage(data) or usage_estimate(
        body_bytes=body_bytes, output_chunks=len(data) // 4
    )
    call.status = response.status
    watch.disarm()
    await event_record(call, status="completed")
    await responder.json(response.status, data)


async def _oversized(
    call: Call, body_bytes: int, watch: DisconnectWatch, started: float
) -> NoReturn:
    """A success too large to hold: the client gets a 502, the upstream's work is still billed
    (estimated as if the answer stopped at the bound, like a request cut off)."""
    limit = settings.GATEWAY_MAX_UPSTREAM_BODY_BYTES
    call.upstream_ms, call.status = _since_ms(started), 502
    call.usage = usage_estimate(body_bytes=body_bytes, output_chunks=limit // 4)
    watch.disarm()
    await event_record(call, status="cancelled")
    raise upstream_too_large()


def _json_usage(data: bytes) -> Usage | None:
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    return usage_parse(parsed.get("usage")) if isinstance(parsed, dict) else None


async def _stream(
    call: Call,
    response: aiohttp.ClientResponse,
    first: bytes,
    relay: SseRelay,
    body_bytes: int,
    responder: Responder,
    watch: DisconnectWatch,
    started: float,
) -> None:
    call.status = response.status
    content_type = response.headers.get("Content-Type", "text/event-stream").encode()
    head = [
        (b"content-type", content_type),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
    ]
    await responder.start(response.status, head)
    streams_in_flight.inc()
    try:
        failure = await _pump(response, first, relay, responder)
    finally:
        streams_in_flight.dec()
    call.upstream_ms = _since_ms(started)
    tail = relay.rest()
    call.usage = relay.usage or usage_estimate(
        body_bytes=body_bytes, output_chunks=relay.content_chunks
    )
    watch.disarm()
    # The upstream accepted and answered: bill it even when no delta was recognised.
    await event_record(call, status="completed" if failure is None else "cancelled")
    if failure is not None:
        tail += sse_error(message=failure.message, type=failure.type, code=failure.code)
    await responder.body(tail + (_DONE if relay.done and failure is None else b""))


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
        limit = settings.GATEWAY_MAX_UPSTREAM_EVENT_BYTES
        return b"", bad_gateway(f"The upstream sent an event larger than {limit} bytes.")


async def _client_gone(
    call: Call,
    response: aiohttp.ClientResponse | None,
    relay: SseRelay | None,
    body_bytes: int,
    started: float,
) -> None:
    if response is not None:
        response.close()  # stops the upstream generating (vLLM frees the sequence)
    call.status = 499
    call.upstream_ms = _since_ms(started)
    if relay is None or (relay.usage is None and not relay.content_chunks):
        return
    call.usage = relay.usage or usage_estimate(
        body_bytes=body_bytes, output_chunks=relay.content_chunks
    )
    await event_record(call, status="cancelled")


def _timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def event_record(call: Call, *, status: str) -> None:
    """Make the usage event durable (before the response's last byte)."""
    entry, usage = call.entry, call.usage
    assert entry is not None and usage is not None
    call.event_status = status
    tokens = {
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "cachedInputTokens": usage.cached_input_tokens,
    }
    event = {
        "idempotencyKey": new_ulid(),
        "timestamp": _timestamp(),
        "requestId": call.request_id,
        "requestMetadata": call.metadata,
        "modelSlug": call.slug,
        "externalCustomerId": entry.external_id,
        "externalEntityId": entry.external_id,
        "apiKeyPrefix": entry.key_prefix,
        "groupId": entry.group_id,
        "status": status,
        "tokens": tokens,
        **({"cost": cost_wire(call.pricing, usage)} if call.pricing is not None else {}),
        "workspaceId": entry.workspace_id,
        "usageEstimated": usage.estimated,
        "httpStatus": call.status,
        "target": call.target,
        "totalMs": round(call.elapsed_ms(), 3),
        "upstreamMs": round(call.upstream_ms, 3),
        "firstByteMs": None if call.first_byte_ms is None else round(call.first_byte_ms, 3),
    }
    note = (INFLIGHT_KEY, call.request_id) if journal().end(call.request_id) else None
    with tracing.span("usage record"):
        await usage_event_record(client=main_redis(), event=event, note=note)
