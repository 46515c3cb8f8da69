"""The wire shape of usage events, shared by webhook batches and the events API."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from billing.models import UnreadableMetadata, UsageEvent
from gateway_project.kernel.money import amount_text

BATCH_TYPE = "API_BILLING_USAGE"


def timestamp_wire(value: datetime) -> str:
    """RFC 3339 UTC with milliseconds and a `Z`."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_wire(event: UsageEvent, *, metadata: bool = True) -> dict[str, Any]:
    """One event in camelCase; the events API leaves `requestMetadata` out (and never loads it)."""
    wire: dict[str, Any] = {
        "idempotencyKey": event.idempotency_key,
        "timestamp": timestamp_wire(event.timestamp),
        "requestId": event.request_id,
    }
    if metadata:
        wire["requestMetadata"] = _metadata(event)
    wire = {
        **wire,
        "modelSlug": event.model_slug,
        "externalCustomerId": event.external_entity_id,
        "externalEntityId": event.external_entity_id,
        "apiKeyPrefix": event.api_key_prefix,
        "groupId": event.group_id,
        "status": event.status,
        "tokens": {
            "inputTokens": event.input_tokens,
            "outputTokens": event.output_tokens,
            "cachedInputTokens": event.cached_input_tokens,
        },
    }
    if event.cost_currency and event.cost_amount is not None:
        wire["cost"] = {"currency": event.cost_currency, "amount": amount_text(event.cost_amount)}
    return wire


def _metadata(event: UsageEvent) -> Any:
    if isinstance(event.request_metadata, UnreadableMetadata):
        raise ValueError(event.request_metadata.reason)
    return event.request_metadata


def event_bytes(event: UsageEvent) -> bytes:
    """One event as strict UTF-8 JSON; raises for what a receiver could not parse (unpaired
    surrogates, NaN or Infinity, metadata that could not be read back)."""
    wire = event_wire(event)
    return json.dumps(wire, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def batch_body(parts: Iterable[bytes]) -> bytes:
    """The frozen bytes of one webhook delivery from its events' `event_bytes`: compact UTF-8
    JSON, serialized exactly once."""
    head = f'{{"type":"{BATCH_TYPE}","data":{{"events":['.encode()
    return head + b",".join(parts) + b"]}}"
