"""The fifth step of an inference request: its usage record, made durable before the response's
last byte, in the same Redis step that ends its in-flight note."""

from __future__ import annotations

import time

from billing.services.usage import UsageRecord, usage_record_write
from gateway_project.kernel import tracing
from routing.inference_request import InferenceRequest
from routing.journal import INFLIGHT_KEY, journal
from routing.pricing import cost_wire
from routing.redis_pool import main_redis
from routing.relay import RelayOutcome


def usage_record_of(request: InferenceRequest, outcome: RelayOutcome) -> UsageRecord | None:
    """The usage record of a relayed request (None: nothing billable reached the client)."""
    usage, entry, pricing = outcome.usage, request.entry, request.pricing
    if usage is None:
        return None
    return UsageRecord(
        request_id=request.request_id,
        metadata=request.metadata,
        slug=request.slug,
        external_id=entry.external_id,
        key_prefix=entry.key_prefix,
        group_id=entry.group_id,
        workspace_id=entry.workspace_id,
        status=outcome.event_status,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        estimated=usage.estimated,
        cost=cost_wire(pricing, usage) if pricing is not None else None,
        http_status=outcome.status,
        target=outcome.target,
        total_ms=(time.perf_counter() - request.started) * 1000,
        upstream_ms=outcome.upstream_ms,
        first_byte_ms=outcome.first_byte_ms,
    )


async def request_record(record: UsageRecord) -> None:
    """Make the record durable; the request's in-flight note ends in the same step."""
    note = (INFLIGHT_KEY, record.request_id) if journal().end(record.request_id) else None
    with tracing.span("usage record"):
        await usage_record_write(client=main_redis(), record=record, note=note)
