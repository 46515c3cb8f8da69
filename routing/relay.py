"""Calls an endpoint's targets in priority order and relays the answer, JSON or SSE."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any, NoReturn

import aiohttp
from django.conf import settings

from billing.services import usage_event_record
from gateway_project.kernel.errors import GatewayError
from gateway_project.kernel.ids import new_ulid
from routing.call import Call
from routing.client_connection import DisconnectWatch, Responder
from routing.journal import INFLIGHT_KEY, journal
from routing.metrics import metric_gauge_add, metric_inc
from routing.redis_pool import main_redis
from routing.streaming import EventTooLarge, SseRelay, model_rewrite, sse_error
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
from routing.usage import Usage, usage_estimate, usage_parse

FALLBACK_STATUSES = frozenset({429, 502, 503, 504})
_DONE = b"data: [DONE]\n\n"


class UpstreamAnswered(GatewayError):
    """An upstream error response, relayed as is when its body is JSON."""

    def __init__(self, status: int, raw: bytes, retry_after: str | None) -> None:
        server = status >= 500
        super().__init__(
            f"The upstream answered HTTP {status}.",
            status=status,
            type="server_error" if server else "invalid_request_error",
            code="upstream_error",
            headers={"Retry-After": retry_after} if retry_after else None,
        )
        self.raw = raw if _is_json(raw) else None


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


def bad_gateway(message: str = "The upstream could not be reached.") -> GatewayError:
    """502 in the envelope."""
    return GatewayError(message, status=502, type="server_error", code="bad_gateway")


def gateway_timeout() -> GatewayError:
    """504 in the envelope."""
    return GatewayError(
        "The upstream did not answer in time.",
        status=504,
        type="server_error",
        code="upstream_timeout",
    )


def _too_large() -> GatewayError:
    limit = settings.GATEWAY_MAX_UPSTREAM_BODY_BYTES
    return bad_gateway(f"The upstream's answer is larger than {limit} bytes.")


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
            return await _answer(call, *await _attempt(call, target, body, headers))
        except UpstreamTimeout:
            failure = gateway_timeout()
        except (aiohttp.ClientError, OSError, UpstreamRefused):
            failure = bad_gateway()
        except UpstreamTooLarge:
            failure = _too_large()
        except UpstreamAnswered as answered:
            if answered.status not in FALLBACK_STATUSES:
                raise
            failure = answered
        metric_inc("gateway_upstream_errors_total", (("kind", failure.code), ("slug", call.slug)))
    raise failure


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
        strip_usage=not _usage_asked(body),
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
    raise _too_large()


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
    metric_gauge_add("gateway_streams_in_flight", 1)
    try:
        failure = await _pump(response, first, relay, responder)
    finally:
        metric_gauge_add("gateway_streams_in_flight", -1)
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
        "workspaceId": entry.workspace_id,
        "usageEstimated": usage.estimated,
        "httpStatus": call.status,
        "target": call.target,
        "totalMs": round(call.elapsed_ms(), 3),
        "upstreamMs": round(call.upstream_ms, 3),
        "firstByteMs": None if call.first_byte_ms is None else round(call.first_byte_ms, 3),
    }
    note = (INFLIGHT_KEY, call.request_id) if journal().end(call.request_id) else None
    await usage_event_record(client=main_redis(), event=event, note=note)
