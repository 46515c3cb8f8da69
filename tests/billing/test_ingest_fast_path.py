"""Ingest's fast path (events stored as they are) agrees with the full cleaning, and a replay in a
batch of new events still makes no second row."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from django.conf import settings

from billing.models import UsageEvent
from billing.services.ingest import usage_ingest
from billing.services.usage import USAGE_STREAM
from billing.services.usage_store import usage_event_parse, usage_event_values
from groups.models import Group
from tests.billing.stream_events import stream_event


def _event(group: Group, number: int, **fields: Any) -> dict[str, Any]:
    return stream_event(group, f"req-{number:06d}", f"01J9X7Y0Z3K4M5N6P7Q8{number:06d}", **fields)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _xadd(*events: dict[str, Any]) -> None:
    client = redis.Redis.from_url(settings.REDIS_URL)
    for event in events:
        client.xadd(USAGE_STREAM, {"e": json.dumps(event)})


VARIANTS: list[dict[str, Any]] = [
    {},
    {"cost": {"currency": "USD", "amount": "0.000123000000"}},
    {"cost": {"currency": "usd", "amount": "1"}},
    {"requestMetadata": {"n": 2**70, "deep": {"f": 1.5}}},
    {"requestMetadata": {"big": 2**64 + 1}},
    {"requestMetadata": {"nul": "a\x00b"}},
    {"requestMetadata": {"lone": "\ud800"}},
    {"requestMetadata": None, "firstByteMs": None, "httpStatus": None},
    {"requestMetadata": ["not", "an", "object"]},
    {"externalEntityId": "x" * 300, "target": 7},
    {"apiKeyPrefix": "sky_\x00abc"},
    {"tokens": {"inputTokens": "12", "outputTokens": -1, "cachedInputTokens": 2**63}},
    {"tokens": {"inputTokens": 1.5}},
    {"status": "weird", "timestamp": "yesterday", "httpStatus": 70000},
    {"totalMs": 1e308, "upstreamMs": "3", "usageEstimated": 1},
    {"ingestNote": "replayed by the reaper"},
    {"timestamp": "2026-05-05T12:00:00"},
]


@pytest.mark.parametrize("change", VARIANTS)
def test_the_fast_path_stores_what_the_full_cleaning_stores(
    group: Group, change: dict[str, Any]
) -> None:
    raw = json.dumps(_event(group, 1, **change)).encode()

    event, clean = usage_event_parse(raw)
    fast = usage_event_values(event=event, clean=clean)
    full = usage_event_values(event=json.loads(raw), clean=False)

    if "timestamp" in fast and "unreadable" in fast["ingest_note"]:
        fast.pop("timestamp"), full.pop("timestamp")  # the ingest time, read twice
    assert fast == full
    assert all(type(fast[name]) is type(full[name]) for name in fast)


@pytest.mark.parametrize(
    "change",
    [
        {"requestMetadata": {"nul": "a\x00b"}},
        {"requestMetadata": {"lone": "\udfff"}},
        {"requestMetadata": {"n": 2**70}},
        {"requestMetadata": {"deep": _nested(40)}},
    ],
)
def test_what_needs_cleaning_never_takes_the_fast_path(
    group: Group, change: dict[str, Any]
) -> None:
    raw = json.dumps(_event(group, 1, **change)).encode()

    _, clean = usage_event_parse(raw)

    assert clean is False


def test_an_event_with_a_nan_still_parses_the_slow_way(group: Group) -> None:
    raw = json.dumps(_event(group, 1, requestMetadata={"x": float("nan")})).encode()

    event, clean = usage_event_parse(raw)

    assert clean is False and event["requestId"] == "req-000001"


def test_a_replay_inside_a_batch_of_new_events_stores_every_new_one_once(group: Group) -> None:
    _xadd(_event(group, 1), _event(group, 2))
    usage_ingest()

    _xadd(*[_event(group, n) for n in range(3, 40)], _event(group, 2), _event(group, 40))
    _xadd(_event(group, 41, requestMetadata={"nul": "a\x00b"}), _event(group, 1))
    usage_ingest()

    ids = list(UsageEvent.objects.order_by("request_id").values_list("request_id", flat=True))
    assert ids == [f"req-{n:06d}" for n in range(1, 42)]
    assert UsageEvent.objects.get(request_id="req-000041").request_metadata == {"nul": "ab"}
    assert redis.Redis.from_url(settings.REDIS_URL).xlen(USAGE_STREAM) == 0


def test_a_batch_replayed_whole_makes_no_second_row(group: Group) -> None:
    events = [_event(group, n) for n in range(1, 30)]
    _xadd(*events)
    usage_ingest()

    _xadd(*events)
    stored = usage_ingest()

    assert stored == 29 and UsageEvent.objects.count() == 29


def test_a_gateway_shaped_event_takes_the_fast_path(group: Group) -> None:
    raw = json.dumps(_event(group, 1, cost={"currency": "USD", "amount": "0.5"})).encode()

    event, clean = usage_event_parse(raw)

    assert clean is True and event["cost"] == {"currency": "USD", "amount": "0.5"}
