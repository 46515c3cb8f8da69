"""One log line per management API call (logger `gateway.management`).

Method, route (the URL pattern, never the raw path), status, workspace, management key prefix,
duration and request id, in the keys of an inference request's line (gateway_project/logs.py).
The request id is also the response's `X-Request-ID` and an attribute of the call's trace span.
Never the key itself nor a body.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase

from gateway_project.kernel.tracing import current_annotate

MANAGEMENT_PREFIX = "/v1/gateway"
logger = logging.getLogger("gateway.management")
GetResponse = Callable[[HttpRequest], HttpResponseBase]


def management_access_log(get_response: GetResponse) -> GetResponse:
    """Django middleware: the line, after the response is ready."""

    def middleware(request: HttpRequest) -> HttpResponseBase:
        if not request.path.startswith(MANAGEMENT_PREFIX):
            return get_response(request)
        started, request_id = time.perf_counter(), str(uuid.uuid4())
        current_annotate({"gateway.request_id": request_id})
        response = get_response(request)
        response["X-Request-ID"] = request_id
        logger.info("management request", extra=_fields(request, response, request_id, started))
        return response

    return middleware


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
