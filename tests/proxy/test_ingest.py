"""Usage events move from the Redis stream into the database exactly once per request id."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
from django.conf import settings

from billing.models import UsageEvent
from billing.services.ingest import GROUP, usage_ingest
from billing.services.usage import DEAD_LETTER_STREAM, USAGE_STREAM, usage_event_record
from tests.billing.stream_events import stream_event


def _event(group, request_id: str, idempotency_key: str) -> dict:
    return stream_event(group, request_id, idempotency_key)


@pytest.fixture
def group(workspace):
    from groups.models import Group

    group = Group(workspace=workspace, external_entity_id="cust_42")
    group.root = group
    group.save()
    return group


def _record(event: dict) -> None:
    async def run() -> None:
        client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        await usage_event_record(client=client, event=event)
        await client.aclose()

    asyncio.run(run())


def test_ingest_stores_each_request_once(group):
    _record(_event(group, "req-1", "01J9X7Y0Z3K4M5N6P7Q8R9S0T1"))
    _record(_event(group, "req-1", "01J9X7Y0Z3K4M5N6P7Q8R9S0T2"))  # a retried duplicate
    _record(_event(group, "req-2", "01J9X7Y0Z3K4M5N6P7Q8R9S0T3"))

    usage_ingest()
    usage_ingest()

    rows = list(UsageEvent.objects.order_by("request_id"))
    assert [r.request_id for r in rows] == ["req-1", "req-2"]
    assert (rows[0].cached_input_tokens, rows[0].request_metadata) == (3, {"a": 1})
    assert redis.Redis.from_url(settings.REDIS_URL).xlen(USAGE_STREAM) == 0


def test_a_replayed_entry_in_a_later_batch_makes_no_second_row_and_rows_get_model_defaults(group):
    event = _event(group, "req-1", "01J9X7Y0Z3K4M5N6P7Q8R9S0T1")
    _record(event)
    usage_ingest()
    first = UsageEvent.objects.get()

    _record(event)  # the same entry again, e.g. re-sent after a crash before its acknowledgement
    _record(_event(group, "req-2", "01J9X7Y0Z3K4M5N6P7Q8R9S0T2"))
    usage_ingest()

    rows = list(UsageEvent.objects.order_by("request_id"))
    assert [(r.request_id, r.idempotency_key) for r in rows] == [
        ("req-1", "01J9X7Y0Z3K4M5N6P7Q8R9S0T1"),
        ("req-2", "01J9X7Y0Z3K4M5N6P7Q8R9S0T2"),
    ]
    assert rows[0].created_at == first.created_at and rows[1].created_at >= first.created_at
    assert (rows[1].batched_at, rows[1].quarantined_at, rows[1].quarantine_error) == (
        None,
        None,
        "",
    )
    assert (rows[1].input_tokens, rows[1].first_byte_ms, rows[1].ingest_note) == (10, 1.0, "")
    assert redis.Redis.from_url(settings.REDIS_URL).xlen(DEAD_LETTER_STREAM) == 0


def test_entries_left_pending_by_a_dead_consumer_are_reclaimed(group, monkeypatch):
    import billing.services.ingest

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.xgroup_create(USAGE_STREAM, GROUP, id="0", mkstream=True)
    client.xadd(
        USAGE_STREAM, {"e": json.dumps(_event(group, "req-9", "01J9X7Y0Z3K4M5N6P7Q8R9S0T9"))}
    )
    client.xreadgroup(GROUP, "crashed-worker", {USAGE_STREAM: ">"}, count=10)  # read, never acked
    monkeypatch.setattr(billing.services.ingest, "CLAIM_IDLE_MS", 0)

    stored = usage_ingest()

    assert stored == 1
    assert UsageEvent.objects.get().request_id == "req-9"
    assert client.xpending(USAGE_STREAM, GROUP)["pending"] == 0


def test_an_event_the_database_refuses_is_parked_without_blocking_the_rest(transactional_db, group):
    broken = _event(group, "req-bad", "01J9X7Y0Z3K4M5N6P7Q8R9S0TA")
    broken["groupId"] = "grp_does_not_exist"
    _record(broken)
    _record(_event(group, "req-ok", "01J9X7Y0Z3K4M5N6P7Q8R9S0TB"))

    usage_ingest()

    assert list(UsageEvent.objects.values_list("request_id", flat=True)) == ["req-ok"]
    client = redis.Redis.from_url(settings.REDIS_URL)
    assert client.xlen(DEAD_LETTER_STREAM) == 1 and client.xlen(USAGE_STREAM) == 0
