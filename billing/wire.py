"""The wire shape of usage events, shared by webhook batches and the events API."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from billing.models import UnreadableMetadata, UsageEvent
from gateway_project.kernel.money import amount_text

BATCH_TYPE = "API_BILLING_USAGE"


def timestamp_wire(value: datetime) -> str:
    """RFC 3339 UTC with milliseconds and a `Z`."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# The columns an event's wire shape reads (besides requestMetadata), as `values()` names them.
EVENT_WIRE_FIELDS = (
    "idempotency_key",
    "timestamp",
    "request_id",
    "model_slug",
    "external_entity_id",
    "api_key_prefix",
    "group_id",
    "status",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cost_currency",
    "cost_amount",
)


def event_wire(event: UsageEvent, *, metadata: bool = True) -> dict[str, Any]:
    """One event in camelCase; the events API leaves `requestMetadata` out (and never loads it)."""
    row = {name: getattr(event, name) for name in EVENT_WIRE_FIELDS}
    return _wire(row, {"requestMetadata": _metadata(event)} if metadata else {})


def event_row_wire(row: Mapping[str, Any]) -> dict[str, Any]:
    """One events API event (no `requestMetadata`) from a `values(*EVENT_WIRE_FIELDS)` row,
    without building a model instance."""
    return _wire(row, {})


def _wire(row: Mapping[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "idempotencyKey": row["idempotency_key"],
        "timestamp": timestamp_wire(row["timestamp"]),
        "requestId": row["request_id"],
        **metadata,
        "modelSlug": row["model_slug"],
        "externalCustomerId": row["external_entity_id"],
        "externalEntityId": row["external_entity_id"],
        "apiKeyPrefix": row["api_key_prefix"],
        "groupId": row["group_id"],
        "status": row["status"],
        "tokens": {
            "inputTokens": row["input_tokens"],
            "outputTokens": row["output_tokens"],
            "cachedInputTokens": row["cached_input_tokens"],
        },
    }
    if row["cost_currency"] and row["cost_amount"] is not None:
        wire["cost"] = {"currency": row["cost_currency"], "amount": amount_text(row["cost_amount"])}
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
