"""The inference data plane as a raw ASGI app: no Django request cycle, no ORM when warm.

gateway_project/asgi.py sends every `/v1/...` path except `/v1/gateway/...` (and `/metrics`) here.
A request goes through six steps, each a function of its own module that takes data and returns
data: authenticate (routing/authenticate.py), parse (routing/inference_request.py), admit
(routing/admit.py), relay (routing/relay.py), record (routing/record.py), reconcile
(routing/reconcile.py). Order of checks: route/method, key, body size, content type, JSON, model,
metadata, limits, upstream.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from gateway_project.kernel import tracing
from gateway_project.kernel.connection_hook import DISCONNECT_EXTENSION
from gateway_project.kernel.errors import GatewayError, NotFound, tracebacks_drop
from gateway_project.kernel.meanwhile import afterwards
from routing.admission import Admission
from routing.admit import request_admit
from routing.authcache import KeyEntry, cache_confirmed_age, route_lookup
from routing.authenticate import request_authenticate
from routing.call import Call
from routing.client_connection import DisconnectWatch, Receive, Responder, Send
from routing.inference_request import InferenceRequest, endpoint_for, request_parse
from routing.journal import journal_open
from routing.jsonwire import json_write
from routing.lifecycle import listener_ensure
from routing.metrics import CONTENT_TYPE, key_cache_age, metrics_gather
from routing.reconcile import request_reconcile
from routing.record import request_record, usage_record_of
from routing.redis_pool import main_redis
from routing.relay import RelayOutcome, relay_finish, relay_run
from routing.request_ids import request_id_new
from routing.request_read import request_headers
from routing.request_telemetry import request_observe

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


async def proxy_app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    """ASGI entry point of the inference path."""
    if scope["path"] == "/metrics":
        await _metrics(send)
        return
    listener_ensure()
    call = Call(request_id=request_id_new(), path=scope["path"])
    responder = Responder(send, request_id=call.request_id)
    span = tracing.request_start(scope["headers"], call.request_id)
    try:
        await _serve(call, scope, receive, responder)
    except GatewayError as exc:
        tracebacks_drop(exc)
        call.status, call.error_code = exc.status, exc.code
        if not responder.started:
            raw = getattr(exc, "raw", None)
            await (responder.json(exc.status, raw) if raw else responder.error(exc))
    except Exception as exc:
        logger.exception("inference request failed", extra={"request_id": call.request_id})
        tracebacks_drop(exc)
        call.status, call.error_code = 500, "internal_error"
        if not responder.started:
            await responder.error(
                GatewayError(
                    "Internal error.", status=500, type="server_error", code="internal_error"
                )
            )
    finally:
        tracing.request_end(span, call)
        route = route_for(call.path)
        afterwards(request_observe, call, route.kind if route else "unknown", call.elapsed_ms())


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
    route = _route_check(call.path, scope["method"])
    call.kind = route.kind
    headers = request_headers(scope)
    call.entry = entry = await request_authenticate(headers)
    if route.kind in ("models", "model"):
        await _models_answer(call, entry, responder)
        return
    request = await request_parse(
        request_id=call.request_id,
        path=call.path,
        kind=route.kind,
        started=call.started,
        entry=entry,
        headers=headers,
        receive=receive,
    )
    call.slug, call.stream = request.slug, request.stream
    with tracing.span("admission"):
        admission = await request_admit(request)
    for name, value in admission.headers.items() if admission else ():
        responder.header_add(name, value)
    journal_open(request, admission.reservation if admission else None)
    extensions = scope.get("extensions")
    hook = extensions.get(DISCONNECT_EXTENSION) if extensions else None
    await _relayed(call, request, admission, DisconnectWatch(receive, hook), responder)


async def _relayed(
    call: Call,
    request: InferenceRequest,
    admission: Admission | None,
    watch: DisconnectWatch,
    responder: Responder,
) -> None:
    """Relay, record, send the last bytes, reconcile: the usage record is durable before the
    client's last byte, and whatever happens the reservation is settled or refunded."""
    billed, settled = None, False
    try:
        outcome = await relay_run(request=request, responder=responder, watch=watch)
        _outcome_note(call, outcome)
        record = usage_record_of(request, outcome)
        if record is not None and outcome.usage is not None:
            billed = outcome.usage
            settled = await request_record(request, record, admission, billed)
            call.event_status = record.status
        await relay_finish(responder, outcome)
    finally:
        watch.disarm()
        await request_reconcile(request, admission, billed, settled=settled)


def _outcome_note(call: Call, outcome: RelayOutcome) -> None:
    call.status, call.target, call.usage = outcome.status, outcome.target, outcome.usage
    call.upstream_ms, call.first_byte_ms = outcome.upstream_ms, outcome.first_byte_ms


def _route_check(path: str, method: str) -> Route:
    route = route_for(path)
    if route is None:
        raise NotFound(f"Unknown inference route {path}.", code="unknown_route")
    if method != route.method:
        raise GatewayError(
            f"Use {route.method} for {path}.",
            status=405,
            code="method_not_allowed",
            headers={"Allow": route.method},
        )
    return route


def _model_card(slug: str) -> dict[str, Any]:
    return {"id": slug, "object": "model", "created": 0, "owned_by": slug.split("/", 1)[0]}


async def _models_answer(call: Call, entry: KeyEntry, responder: Responder) -> None:
    """GET /v1/models (the slugs the key may call) or GET /v1/models/{slug} (one of them)."""
    if call.kind == "model":
        endpoint = await endpoint_for(entry, call.path.removeprefix(MODEL_PREFIX))
        call.slug = endpoint.slug
        answer: dict[str, Any] = _model_card(endpoint.slug)
    else:
        data = []
        for slug in sorted(entry.allowed_slugs):
            route = await route_lookup(slug=slug)
            if route is not None and route.workspace_id == entry.workspace_id:
                data.append(_model_card(slug))
        answer = {"object": "list", "data": data}
    await responder.json(200, json_write(answer))
    call.status = 200
