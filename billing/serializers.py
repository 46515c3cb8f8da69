"""Input and output of GET /v1/gateway/events: the query, the pinned cursor, the event."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.http import QueryDict
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

from billing.selectors import EventsWindow
from gateway_project.kernel.errors import ValidationFailed

QUERY_PARAMS = {"start_time", "end_time", "limit", "cursor", "api_keys", "external_entity_ids"}
MAX_FILTER_VALUES = 100


def _time_parse(raw: str, *, param: str) -> datetime:
    """An RFC 3339 timestamp (a naive one is read as UTC); 400 `invalid_time` otherwise."""
    try:
        value = parse_datetime(raw.strip())
    except ValueError:
        value = None
    if value is None:
        raise ValidationFailed(
            f"{param} must be an RFC 3339 timestamp.", code="invalid_time", param=param
        )
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _list_parse(params: QueryDict, name: str) -> list[str]:
    """A filter given comma-separated, repeated, or both."""
    values = [v.strip() for raw in params.getlist(name) for v in raw.split(",") if v.strip()]
    if len(values) > MAX_FILTER_VALUES:
        raise ValidationFailed(
            f"{name} takes at most {MAX_FILTER_VALUES} values.", code="too_many_values", param=name
        )
    return sorted(set(values))


def events_query_parse(params: QueryDict, *, now: datetime) -> EventsWindow:
    """The window a request asks for; with a cursor, the window the cursor pinned."""
    unknown = sorted(set(params) - QUERY_PARAMS)
    if unknown:
        raise ValidationFailed(
            f"Unknown query parameter `{unknown[0]}`.", code="unknown_field", param=unknown[0]
        )
    cursor = params.get("cursor")
    if cursor:
        return events_cursor_decode(cursor)
    start_time = params.get("start_time")
    if not start_time:
        raise ValidationFailed(
            "start_time is required without a cursor.",
            code="missing_start_time",
            param="start_time",
        )
    start = _time_parse(start_time, param="start_time")
    holdback = timedelta(seconds=settings.GATEWAY_EVENTS_HOLDBACK_SECONDS)
    end_time = params.get("end_time")
    end = _time_parse(end_time, param="end_time") if end_time else now - holdback
    if start > end:
        raise ValidationFailed(
            "start_time must not be after end_time.", code="invalid_time_range", param="start_time"
        )
    return EventsWindow(
        start=start,
        end=end,
        api_keys=_list_parse(params, "api_keys"),
        external_entity_ids=_list_parse(params, "external_entity_ids"),
    )


def events_cursor_encode(*, window: EventsWindow, last: Mapping[str, Any]) -> str:
    """An opaque cursor resuming after the row `last` inside the same window and filters."""
    state = {
        "s": window.start.isoformat() if window.start else None,
        "e": window.end.isoformat(),
        "t": last["timestamp"].isoformat(),
        "k": last["idempotency_key"],
        "a": list(window.api_keys),
        "x": list(window.external_entity_ids),
    }
    return (
        base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode())
        .decode()
        .rstrip("=")
    )


def events_cursor_decode(cursor: str) -> EventsWindow:
    """The window a cursor pinned; 400 `invalid_cursor` for anything we did not issue."""
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return EventsWindow(
            start=datetime.fromisoformat(state["s"]) if state["s"] else None,
            end=datetime.fromisoformat(state["e"]),
            after=(datetime.fromisoformat(state["t"]), str(state["k"])),
            api_keys=[str(v) for v in state["a"]],
            external_entity_ids=[str(v) for v in state["x"]],
        )
    except (binascii.Error, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValidationFailed(
            "The cursor is not valid.", code="invalid_cursor", param="cursor"
        ) from exc


class TokensSerializer(serializers.Serializer[Any]):
    inputTokens = serializers.IntegerField()  # noqa: N815 - wire names are camelCase
    outputTokens = serializers.IntegerField()  # noqa: N815
    cachedInputTokens = serializers.IntegerField()  # noqa: N815


class CostSerializer(serializers.Serializer[Any]):
    currency = serializers.CharField(help_text="ISO 4217 code")
    amount = serializers.CharField(help_text="A decimal number as a string")


class UsageEventSerializer(serializers.Serializer[Any]):
    """A usage event as the events API returns it (the webhook shape without requestMetadata)."""

    idempotencyKey = serializers.CharField()  # noqa: N815
    timestamp = serializers.CharField(help_text="RFC 3339 UTC, milliseconds, Z")
    requestId = serializers.CharField()  # noqa: N815
    modelSlug = serializers.CharField()  # noqa: N815
    externalCustomerId = serializers.CharField()  # noqa: N815
    externalEntityId = serializers.CharField()  # noqa: N815
    apiKeyPrefix = serializers.CharField()  # noqa: N815
    groupId = serializers.CharField()  # noqa: N815
    status = serializers.ChoiceField(choices=["completed", "cancelled"])
    tokens = TokensSerializer()
    cost = CostSerializer(required=False, help_text="Present on an event of a priced endpoint")


def events_schema_parameters() -> list[Any]:
    """The documented query parameters of the events list."""
    return [
        OpenApiParameter("start_time", str, description="Inclusive; required without a cursor."),
        OpenApiParameter("end_time", str, description="Exclusive; default now minus the holdback."),
        OpenApiParameter("api_keys", str, description="Key prefixes, comma-separated or repeated."),
        OpenApiParameter("external_entity_ids", str, description="Comma-separated or repeated."),
    ]
