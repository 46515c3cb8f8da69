"""One log line per management API call (logger `gateway.management`).

Method, route (the URL pattern, never the raw path), status, workspace, management key prefix,
duration and request id, in the keys of an inference request's line
(gateway_project/kernel/logs.py).
The request id is also the response's `X-Request-ID` and an attribute of the call's trace span.
Never the key itself nor a body.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware

from gateway_project.kernel.logs import plain_log
from gateway_project.kernel.tracing import current_annotate

MANAGEMENT_PREFIX = "/v1/gateway"
logger = logging.getLogger("gateway.management")
GetResponse = Callable[[HttpRequest], HttpResponseBase]
AsyncGetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


@sync_and_async_middleware
def management_access_log(
    get_response: GetResponse | AsyncGetResponse,
) -> GetResponse | AsyncGetResponse:
    """Django middleware: the line, after the response is ready.

    Async under ASGI: a sync-only outermost middleware would cost every request an extra hop from
    the event loop to a thread and back before the view's own."""
    if iscoroutinefunction(get_response):
        async_get_response = cast(AsyncGetResponse, get_response)

        async def async_middleware(request: HttpRequest) -> HttpResponseBase:
            if not request.path.startswith(MANAGEMENT_PREFIX):
                return await async_get_response(request)
            started, request_id = _begin()
            response = await async_get_response(request)
            return _end(request, response, request_id, started)

        return markcoroutinefunction(async_middleware)
    sync_get_response = cast(GetResponse, get_response)

    def middleware(request: HttpRequest) -> HttpResponseBase:
        if not request.path.startswith(MANAGEMENT_PREFIX):
            return sync_get_response(request)
        started, request_id = _begin()
        response = sync_get_response(request)
        return _end(request, response, request_id, started)

    return middleware


def _begin() -> tuple[float, str]:
    request_id = str(uuid.uuid4())
    current_annotate({"gateway.request_id": request_id})
    return time.perf_counter(), request_id


def _end(
    request: HttpRequest, response: HttpResponseBase, request_id: str, started: float
) -> HttpResponseBase:
    response["X-Request-ID"] = request_id
    fields = _fields(request, response, request_id, started)
    plain_log(logger, logging.INFO, "management request", fields)
    return response


def _fields(
    request: HttpRequest, response: HttpResponseBase, request_id: str, started: float
) -> dict[str, object]:
    key = getattr(request, "auth", None)  # DRF sets it once a management key authenticated
    match = request.resolver_match
    return {
        "request_id": request_id,
        "method": request.method,
        "route": f"/{match.route}" if match is not None else "unknown",
        "status": response.status_code,
        "workspace": getattr(key, "workspace_id", None),
        "key_prefix": getattr(key, "prefix", None),
        "total_ms": round((time.perf_counter() - started) * 1000, 3),
    }
