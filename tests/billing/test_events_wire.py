"""The events API builds each event from a row, not a model instance: the same bytes as the
webhook shape without requestMetadata, and exactly what the OpenAPI schema describes."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from billing.models import UsageEvent
from billing.serializers import UsageEventSerializer
from billing.wire import EVENT_WIRE_FIELDS, event_row_wire, event_wire

PRICED = {"cost_currency": "USD", "cost_amount": Decimal("0.000123")}
UNPRICED: dict[str, Any] = {}


def _row(event: UsageEvent) -> dict[str, Any]:
    return UsageEvent.objects.filter(pk=event.pk).values(*EVENT_WIRE_FIELDS).get()


@pytest.mark.parametrize("fields", [PRICED, UNPRICED], ids=["priced", "unpriced"])
def test_a_row_has_the_bytes_of_the_event_without_metadata(
    make_event: Callable[..., UsageEvent], fields: dict[str, Any]
) -> None:
    event = make_event(cached_input_tokens=7, **fields)

    from_row = event_row_wire(_row(event))
    from_model = event_wire(UsageEvent.objects.get(pk=event.pk), metadata=False)

    assert json.dumps(from_row) == json.dumps(from_model)
    assert ("cost" in from_row) == bool(fields)


@pytest.mark.parametrize("fields", [PRICED, UNPRICED], ids=["priced", "unpriced"])
def test_a_row_wire_is_what_the_schema_describes(
    make_event: Callable[..., UsageEvent], fields: dict[str, Any]
) -> None:
    wire = event_row_wire(_row(make_event(**fields)))

    described = UsageEventSerializer(wire).data

    assert json.dumps(wire) == json.dumps(described)


def test_the_webhook_shape_still_carries_metadata_after_the_request_id(
    make_event: Callable[..., UsageEvent],
) -> None:
    event = make_event(request_metadata={"trace": "t-9"})

    keys = list(event_wire(UsageEvent.objects.get(pk=event.pk)))

    assert keys[2:4] == ["requestId", "requestMetadata"]
