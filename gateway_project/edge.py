"""Checks at the ASGI edge, before a request reaches the proxy or Django.

- `/metrics` needs `Authorization: Bearer $GATEWAY_METRICS_TOKEN`; with no token configured, only a
  client connected directly over loopback (no forwarding headers) may read it
  (gateway_project/kernel/metrics_access.py).
- A custom domain serves inference and the health probes only: admin, management API, docs and
  metrics answer 404 there.
- Django's paths get their body read here, bounded by GATEWAY_MAX_CONTROL_BODY_BYTES, before Django
  spools it to a temporary file and before a request holds one of Django's threads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from django.conf import settings

from gateway_project.kernel.errors import GatewayError, NotFound, error_bytes
from gateway_project.kernel.hosts import host_normalize
from gateway_project.kernel.metrics_access import metrics_access_check as check_metrics
from routing.authcache import domain_workspace

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]

METRICS_PATH = "/metrics"
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header, decoded as latin-1."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


async def edge_check(scope: Scope, *, inference: bool) -> None:
    """Raise the GatewayError a request gets before any app sees it."""
    path = scope["path"]
    if not inference and path not in HEALTH_PATHS:
        await custom_domain_refuse(scope)
    if path == METRICS_PATH:
        metrics_access_check(scope)


async def custom_domain_refuse(scope: Scope) -> None:
    """404 for a non-inference path requested on a workspace's custom domain."""
    host = host_normalize(header(scope, b"host") or "")
    if host and await domain_workspace(host=host) is not None:
        raise NotFound("Unknown route.", code="not_found")


def metrics_access_check(scope: Scope) -> None:
    """401 without the metrics token when one is set; 403 for a non-loopback client when not."""
    client = scope.get("client")
    check_metrics(
        token=settings.GATEWAY_METRICS_TOKEN,
        authorization=header(scope, b"authorization"),
        client_host=client[0] if client else None,
        header_names=(name.decode("latin-1") for name, _ in scope["headers"]),
    )


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        f"The request body exceeds {limit} bytes.", status=413, code="request_too_large"
    )


async def body_bounded(scope: Scope, receive: Receive) -> bytes | None:
    """The whole request body, 413 past the limit (declared or counted); None if the client left."""
    limit = settings.GATEWAY_MAX_CONTROL_BODY_BYTES
    declared = header(scope, b"content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise _too_large(limit)
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def body_replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands over `body` once, then the connection's own messages (disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> dict[str, Any]:
        return pending.pop() if pending else await receive()

    return replay


async def error_send(send: Send, exc: GatewayError) -> None:
    """The error envelope for `exc` as a complete response."""
    data = error_bytes(message=exc.message, type=exc.type, code=exc.code, param=exc.param)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        *((name.lower().encode(), value.encode("latin-1")) for name, value in exc.headers.items()),
    ]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
