"""The fifth step of an inference request: its usage record, made durable before the response's
last byte, in the same Redis step that ends its in-flight note. When the limit counters live on
the same Redis, the settle of the request's reservation rides in the same round trip."""

from __future__ import annotations

import time

from billing.services.usage import ScriptCall, UsageRecord, usage_record_write, usage_timestamp
from gateway_project.kernel import tracing
from gateway_project.kernel.hot_settings import hot
from routing.adjust_retry import adjust_retry_start
from routing.admission import Admission
from routing.inference_request import InferenceRequest
from routing.journal import INFLIGHT_KEY, journal
from routing.limit_counters import SCRIPT, SCRIPT_SHA, script_adjust_call
from routing.pricing import cost_wire
from routing.reconcile import settle_plan
from routing.redis_pool import limits_on_main, record_redis
from routing.relay import RelayOutcome
from routing.usage import Usage


def usage_record_of(request: InferenceRequest, outcome: RelayOutcome) -> UsageRecord | None:
    """The usage record of a relayed request (None: nothing billable reached the client)."""
    usage, entry, pricing = outcome.usage, request.entry, request.pricing
    if usage is None:
        return None
    return UsageRecord(
        request_id=request.request_id,
        idempotency_key=request.event_key,
        timestamp=usage_timestamp(),  # when it ended and its usage is known
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


async def request_record(
    request: InferenceRequest, record: UsageRecord, admission: Admission | None, billed: Usage
) -> bool:
    """Make the record durable; the request's in-flight note ends in the same step. True when
    the reservation is settled too (else request_reconcile settles it after the last byte)."""
    note = (INFLIGHT_KEY, record.request_id) if journal().end(record.request_id) else None
    client = record_redis()
    counters, amounts = settle_plan(request, admission, billed)
    also = None
    if counters and limits_on_main():
        keys, args = script_adjust_call(counters=counters, amounts=amounts)
        also = ScriptCall(SCRIPT, SCRIPT_SHA, tuple(keys), tuple(args))
    with tracing.span("usage record"):
        ran = await usage_record_write(
            client=client,
            record=record,
            timeout=hot.GATEWAY_USAGE_RECORD_TIMEOUT,
            note=note,
            also=also,
        )
    if also is not None and not ran:
        # Not lost with Redis: retried in the background, as any settle is.
        adjust_retry_start(counters=counters, amounts=amounts, now=None)
    return also is not None or not counters
