"""A Celery worker's Prometheus endpoint: GATEWAY_WORKER_METRICS_PORT (0, the default: none).

The worker serves the billing pipeline's numbers, read from Redis at each scrape: usage queue
depth and ingest lag, dead letters, webhook deliveries by outcome, quarantine gauges
(billing/services/pipeline_metrics.py). Same access rule as a node's `/metrics`
(gateway_project/kernel/metrics_access.py). The server is a thread of the worker's main process,
started before the pool forks; each scrape answers from one Redis round trip.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from django.conf import settings
from django_redis import get_redis_connection
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.exposition import ThreadingWSGIServer
from redis.exceptions import RedisError

from billing.services.pipeline_metrics import (
    PipelineCollector,
    pipeline_commands,
    pipeline_numbers,
)
from gateway_project.kernel.errors import GatewayError, error_bytes
from gateway_project.kernel.metrics_access import metrics_access_check

logger = logging.getLogger(__name__)
StartResponse = Callable[[str, list[tuple[str, str]]], Any]
PATHS = frozenset({"/metrics", "/"})


def worker_metrics_serve(port: int | None = None) -> ThreadingWSGIServer | None:
    """Serve on `port` (default: the setting) in a daemon thread; None when the port is 0."""
    port = settings.GATEWAY_WORKER_METRICS_PORT if port is None else port
    if not port:
        return None
    server = make_server("", port, metrics_app, ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    logger.info("worker metrics served", extra={"port": server.server_port})
    return server


def metrics_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI app: GET /metrics, behind the metrics access rule."""
    if environ.get("PATH_INFO") not in PATHS:
        return _error(start_response, GatewayError("Unknown route.", status=404, code="not_found"))
    try:
        metrics_access_check(
            token=settings.GATEWAY_METRICS_TOKEN,
            authorization=environ.get("HTTP_AUTHORIZATION"),
            client_host=environ.get("REMOTE_ADDR"),
            header_names=_header_names(environ),
        )
    except GatewayError as exc:
        return _error(start_response, exc)
    try:
        body = _render()
    except (RedisError, OSError):
        logger.warning("worker metrics: Redis did not answer", exc_info=True)
        unavailable = GatewayError(
            "Redis did not answer.", status=503, type="server_error", code="metrics_unavailable"
        )
        return _error(start_response, unavailable)
    start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), _length(body)])
    return [body]


def _render() -> bytes:
    pipe = get_redis_connection("default").pipeline(transaction=False)
    pipeline_commands(pipe)
    replies = pipe.execute()
    registry = CollectorRegistry()
    registry.register(PipelineCollector(pipeline_numbers(replies)))
    return generate_latest(registry)


def _header_names(environ: dict[str, Any]) -> list[str]:
    names = [k.removeprefix("HTTP_").replace("_", "-") for k in environ if k.startswith("HTTP_")]
    return [name.lower() for name in names]


def _error(start_response: StartResponse, exc: GatewayError) -> list[bytes]:
    body = error_bytes(message=exc.message, type=exc.type, code=exc.code, param=exc.param)
    headers = [("Content-Type", "application/json"), _length(body), *exc.headers.items()]
    start_response(f"{exc.status} {_REASONS.get(exc.status, 'Error')}", headers)
    return [body]


def _length(body: bytes) -> tuple[str, str]:
    return ("Content-Length", str(len(body)))


_REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 503: "Service Unavailable"}


class _QuietHandler(WSGIRequestHandler):
    """No access line on stderr per scrape (it would not be JSON)."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        return
