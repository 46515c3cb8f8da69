"""The wire shape of usage events (SPEC §9), shared by webhook batches and the events API."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from billing.models import UsageEvent

BATCH_TYPE = "API_BILLING_USAGE"


def timestamp_wire(value: datetime) -> str:
    """RFC 3339 UTC with milliseconds and a `Z`."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_wire(event: UsageEvent, *, metadata: bool = True) -> dict[str, Any]:
    """One event in camelCase; the events API leaves `requestMetadata` out."""
    wire: dict[str, Any] = {
        "idempotencyKey": event.idempotency_key,
        "timestamp": timestamp_wire(event.timestamp),
        "requestId": event.request_id,
        "requestMetadata": event.request_metadata,
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
    if not metadata:
        del wire["requestMetadata"]
    return wire


def batch_body(events: Iterable[UsageEvent]) -> bytes:
    """The frozen bytes of one webhook delivery: compact UTF-8 JSON, serialized exactly once."""
    body = {"type": BATCH_TYPE, "data": {"events": [event_wire(e) for e in events]}}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
