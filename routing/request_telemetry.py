"""What each inference request leaves behind: metrics and one structured log line (never a key)."""

from __future__ import annotations

import logging

from gateway_project.kernel.logs import plain_log
from routing import metrics
from routing.call import Call

logger = logging.getLogger("gateway.request")


def request_observe(call: Call, route_label: str, total: float) -> None:
    """Count the request and write its log line (`total`: its milliseconds, arrival to end)."""
    # call.slug is set only once the endpoint resolved: labels stay a bounded set.
    slug = call.slug or "unknown"
    route = (route_label,)
    metrics.count(metrics.requests_total, (route_label, str(call.status), slug))
    metrics.observe(metrics.request_duration, route, total / 1000)
    if call.upstream_ms:
        metrics.observe(metrics.upstream_duration, route, call.upstream_ms / 1000)
    metrics.observe(metrics.overhead, route, max(0.0, total - call.upstream_ms) / 1000)
    usage, entry = call.usage, call.entry
    if usage is not None and call.event_status is not None:
        for kind, value in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cached", usage.cached_input_tokens),
        ):
            metrics.count(metrics.tokens_total, (call.slug, kind), value)
    if not logger.isEnabledFor(logging.INFO):
        return
    plain_log(
        logger,
        logging.INFO,
        "inference request",
        {
            "request_id": call.request_id,
            "route": route_label,
            "status": call.status,
            "error_code": call.error_code,
            "workspace": entry.workspace_id if entry else None,
            "group": entry.group_id if entry else None,
            "key_prefix": entry.key_prefix if entry else None,
            "slug": call.slug or None,
            "stream": call.stream,
            "target": call.target or None,
            "event": call.event_status,
            "input_tokens": usage.input_tokens if usage else None,
            "output_tokens": usage.output_tokens if usage else None,
            "usage_estimated": usage.estimated if usage else None,
            "total_ms": round(total, 3),
            "upstream_ms": round(call.upstream_ms, 3),
            "first_byte_ms": None if call.first_byte_ms is None else round(call.first_byte_ms, 3),
        },
    )
