"""The inference data plane as a raw ASGI app: no Django request cycle, no ORM when warm.

gateway_project/asgi.py sends every `/v1/...` path except `/v1/gateway/...` (and `/metrics`) here.
Order of checks: route/method, key, body size, content type, JSON, model, metadata, limits,
upstream.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import MutableMapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.conf import settings

from gateway_project.kernel import tracing
from gateway_project.kernel.errors import (
    AuthenticationFailed,
    GatewayError,
    NotFound,
    ValidationFailed,
)
from gateway_project.kernel.hosts import host_normalize
from keys.selectors import key_hash, key_well_formed
from routing.activity import Rejection, key_use_note, rejection_note
from routing.admission import Admission, limits_admit, limits_refund, limits_settle
from routing.authcache import (
    KeyEntry,
    cache_confirmed_age,
    domain_workspace,
    key_lookup,
    route_lookup,
)
from routing.call import Call
from routing.client_connection import DisconnectWatch, Receive, Responder, Send
from routing.journal import journal, journal_close, journal_note
from routing.lifecycle import listener_ensure
from routing.metrics import CONTENT_TYPE, key_cache_age, limit_rejections, metrics_gather
from routing.models import Endpoint
from routing.pricing import cost_micro, micro_ceil, reservation_micro
from routing.redis_pool import main_redis
from routing.relay import relay_run
from routing.request_read import (
    request_body_parse,
    request_body_read,
    request_headers,
    request_metadata,
)
from routing.request_telemetry import request_observe
from routing.targets import ResolvedEndpoint
from routing.usage import usage_reserve

logger = logging.getLogger("gateway.request")


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    kind: str


ROUTES = {
    "/v1/chat/completions": Route("POST", "chat"),
    "/v1/completions": Route("POST", "completions"),
    "/v1/embeddings": Route("POST", "embeddings"),
    "/v1/responses": Route("POST", "responses"),
    "/v1/models": Route("GET", "models"),
}
# GET /v1/models/{slug}: the slug itself holds a slash.
MODEL_PREFIX = "/v1/models/"
MODEL_ROUTE = Route("GET", "model")
_AUTH_SCHEMES = ("bearer ", "api-key ")
# Embeddings never stream: a `stream: true` there is answered (and billed) as one JSON body.
STREAMING_KINDS = frozenset({"chat", "completions", "responses"})
MAX_SLUG_LENGTH = Endpoint._meta.get_field("slug").max_length or 201


async def proxy_app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    """ASGI entry point of the inference path."""
    if scope["path"] == "/metrics":
        await _metrics(send)
        return
    listener_ensure()
    call = Call(request_id=str(uuid.uuid4()), path=scope["path"])
    responder = Responder(send, request_id=call.request_id)
    span = tracing.request_start(scope["headers"], call.request_id)
    try:
        await _serve(call, scope, receive, responder)
    except GatewayError as exc:
        call.status, call.error_code = exc.status, exc.code
        if not responder.started:
            raw = getattr(exc, "raw", None)
            await (responder.json(exc.status, raw) if raw else responder.error(exc))
    except Exception:
        logger.exception("inference request failed", extra={"request_id": call.request_id})
        call.status, call.error_code = 500, "internal_error"
        if not responder.started:
            await responder.error(
                GatewayError(
                    "Internal error.", status=500, type="server_error", code="internal_error"
                )
            )
    finally:
        route = route_for(call.path)
        request_observe(call, route_label=route.kind if route else "unknown")
        tracing.request_end(span, call)


def route_for(path: str) -> Route | None:
    """The route of an inference path (None: unknown)."""
    if path.startswith(MODEL_PREFIX) and len(path) > len(MODEL_PREFIX):
        return MODEL_ROUTE
    return ROUTES.get(path)


async def _metrics(send: Send) -> None:
    key_cache_age.set(cache_confirmed_age())
    data = await metrics_gather(main_redis())
    headers = [
        (b"content-type", CONTENT_TYPE.encode()),
        (b"content-length", str(len(data)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _serve(
    call: Call, scope: MutableMapping[str, Any], receive: Receive, responder: Responder
) -> None:
    route = route_for(call.path)
    if route is None:
        raise NotFound(f"Unknown inference route {call.path}.", code="unknown_route")
    if scope["method"] != route.method:
        raise GatewayError(
            f"Use {route.method} for {call.path}.",
            status=405,
            code="method_not_allowed",
            headers={"Allow": route.method},
        )
    call.kind = route.kind
    headers = request_headers(scope)
    call.entry = entry = await _authenticate(headers)
    key_use_note(entry.key_prefix)
    if route.kind in ("models", "model"):
        await _models_answer(call, entry, responder)
        return
    raw = await request_body_read(headers, receive)
    body = request_body_parse(headers, raw)
    endpoint = await _endpoint_for(entry, _model_of(body))
    if route.kind == "responses":
        _responses_check(body)
    # Only a resolved slug becomes a metric label or a log field: a client's string never does.
    call.slug = endpoint.slug
    call.pricing = endpoint.pricing
    call.metadata = request_metadata(headers)
    call.stream = _streaming(body) and route.kind in STREAMING_KINDS
    await _admitted_relay(call, entry, endpoint, body, len(raw), headers, receive, responder)


async def _authenticate(headers: dict[str, str]) -> KeyEntry:
    value = headers.get("authorization", "")
    plaintext = next(
        (value[len(s) :].strip() for s in _AUTH_SCHEMES if value.lower().startswith(s)), ""
    )
    if not plaintext:
        raise AuthenticationFailed("Missing API key: send Authorization: Bearer <key>.")
    # Malformed keys stop here: no hashing, no cache slot, no database round trip.
    if not key_well_formed(plaintext):
        raise AuthenticationFailed("Invalid API key.")
    entry = await key_lookup(plaintext=plaintext, key_hash=key_hash(plaintext))
    if entry is None or not entry.onboarded:
        raise AuthenticationFailed("Invalid API key.")
    owner = await domain_workspace(host=host_normalize(headers.get("host", "")))
    if owner is not None and owner != entry.workspace_id:
        raise AuthenticationFailed("Invalid API key.")
    if entry.expires_at is not None and time.time() >= entry.expires_at:
        raise AuthenticationFailed("This API key has expired.")
    return entry


def _model_card(slug: str) -> dict[str, Any]:
    return {"id": slug, "object": "model", "created": 0, "owned_by": slug.split("/", 1)[0]}


async def _models_answer(call: Call, entry: KeyEntry, responder: Responder) -> None:
    """GET /v1/models (the slugs the key may call) or GET /v1/models/{slug} (one of them)."""
    if call.kind == "model":
        endpoint = await _endpoint_for(entry, call.path.removeprefix(MODEL_PREFIX))
        call.slug = endpoint.slug
        answer: dict[str, Any] = _model_card(endpoint.slug)
    else:
        data = []
        for slug in sorted(entry.allowed_slugs):
            route = await route_lookup(slug=slug)
            if route is not None and route.workspace_id == entry.workspace_id:
                data.append(_model_card(slug))
        answer = {"object": "list", "data": data}
    await responder.json(200, json.dumps(answer).encode())
    call.status = 200


def _responses_check(body: dict[str, Any]) -> None:
    """A background response is generated after the answer, where no usage can be read: refused
    rather than let it run unbilled."""
    if body.get("background") not in (None, False):
        raise ValidationFailed(
            "`background` responses are not supported through the gateway.",
            code="invalid_parameter",
            param="background",
        )


def _model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ValidationFailed("`model` is required.", code="missing_model", param="model")
    if len(model) > MAX_SLUG_LENGTH:
        raise ValidationFailed(
            f"`model` is a slug of at most {MAX_SLUG_LENGTH} characters.",
            code="invalid_model",
            param="model",
        )
    return model


def _streaming(body: dict[str, Any]) -> bool:
    """Only JSON `true` streams; `false`, `null` or no `stream` do not; anything else is a 400."""
    stream = body.get("stream")
    if stream is None or isinstance(stream, bool):
        return stream is True
    raise ValidationFailed(
        "`stream` must be true or false.", code="invalid_parameter", param="stream"
    )


async def _endpoint_for(entry: KeyEntry, slug: str) -> ResolvedEndpoint:
    endpoint = await route_lookup(slug=slug) if slug in entry.allowed_slugs else None
    if endpoint is None or endpoint.workspace_id != entry.workspace_id:
        raise NotFound(
            f"The model `{slug}` does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    return endpoint


async def _admit(
    call: Call, entry: KeyEntry, body: dict[str, Any], body_bytes: int
) -> Admission | None:
    limits = entry.limits.get(call.slug)
    if not limits:
        return None
    budget = usage_reserve(
        kind=call.kind,
        body=body,
        body_bytes=body_bytes,
        default_max_tokens=settings.GATEWAY_DEFAULT_MAX_TOKENS,
        ceiling=settings.GATEWAY_MAX_TOKENS_CEILING,
        media_tokens=settings.GATEWAY_MEDIA_PART_TOKENS,
    )
    spend = None
    if call.pricing is not None:
        completion = budget.tokens - budget.prompt
        spend = reservation_micro(
            call.pricing, prompt_tokens=budget.prompt, completion_tokens=completion
        )
    admission = await limits_admit(
        limits=limits, reserve_tokens=budget.tokens, slug=call.slug, reserve_spend=spend
    )
    if admission.allowed:
        # The upstream gets the caps it was reserved for, so it cannot produce more.
        body.update(budget.fields)
        return admission
    usage_kind = admission.error_type == "usage_limit_error"
    headers = dict(admission.headers)
    if admission.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(admission.retry_after)))
    limit_rejections.labels(admission.limit_type, admission.limit_unit, call.slug).inc()
    rejection_note(
        Rejection(
            group_id=entry.group_id,
            key_prefix=entry.key_prefix,
            slug=call.slug,
            limit_type=admission.limit_type,
            limit_unit=admission.limit_unit,
            threshold=admission.limit_threshold,
            limit_group=admission.limit_group,
            reason=admission.message or "",
        )
    )
    raise GatewayError(
        admission.message or "Limit exceeded.",
        status=429,
        type=admission.error_type or "rate_limit_error",
        code="usage_limit_exceeded" if usage_kind else "rate_limit_exceeded",
        headers=headers,
    )


async def _admitted_relay(
    call: Call,
    entry: KeyEntry,
    endpoint: ResolvedEndpoint,
    body: dict[str, Any],
    body_bytes: int,
    headers: dict[str, str],
    receive: Receive,
    responder: Responder,
) -> None:
    with tracing.span("admission"):
        admission = await _admit(call, entry, body, body_bytes)
    for name, value in admission.headers.items() if admission else ():
        responder.header_add(name, value)
    reservation = admission.reservation if admission else None
    journal().open(
        call.request_id, partial(journal_note, call, body_bytes=body_bytes, reservation=reservation)
    )
    watch = DisconnectWatch(receive)
    try:
        await relay_run(
            call=call,
            endpoint=endpoint,
            body=body,
            body_bytes=body_bytes,
            headers=headers,
            responder=responder,
            watch=watch,
        )
    finally:
        watch.disarm()
        await _reconcile(call, admission)


async def _reconcile(call: Call, admission: Admission | None) -> None:
    # The response is already out: a failure here must not turn into an error for the client.
    if call.event_status is None:
        await journal_close(main_redis(), request_id=call.request_id)
    if admission is None:
        return
    try:
        if call.event_status is not None and call.usage is not None:
            spend = micro_ceil(cost_micro(call.pricing, call.usage)) if call.pricing else 0
            await limits_settle(
                reservation=admission.reservation,
                actual_tokens=call.usage.total,
                actual_spend=spend,
            )
        else:
            await limits_refund(reservation=admission.reservation)
    except Exception:  # noqa: BLE001 - counters self-heal as windows pass; log and go on
        logger.exception("limit reconcile failed", extra={"request_id": call.request_id})
