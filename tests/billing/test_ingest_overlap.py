"""Ingest reads the next batches while it writes the current one: an entry is acknowledged only
once its row is committed, and one replayed after a crash between the commit and the
acknowledgement makes no second row and no second webhook event."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from billing.models import UsageEvent, WebhookDelivery
from billing.services import ingest
from billing.services.batching import events_batch
from billing.services.ingest import GROUP, usage_ingest
from billing.services.usage import USAGE_STREAM
from billing.services.usage_store import (
    usage_events_store,
    usage_rows_prepare,
    usage_rows_ready,
    usage_rows_store,
)
from groups.models import Group
from tests.billing.conftest import endpoint_add
from tests.billing.stream_events import stream_event
from tests.billing.test_backlog import _postgres_unreachable


def _event(group: Group, number: int) -> dict[str, Any]:
    return stream_event(group, f"req-{number:06d}", f"01J9X7Y0Z3K4M5N6P7Q8{number:06d}")


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def _xadd(events: list[dict[str, Any]]) -> None:
    client = _client()
    for event in events:
        client.xadd(USAGE_STREAM, {"e": json.dumps(event)})


def _read_without_ack(consumer: str, count: int) -> list[dict[str, Any]]:
    """What a worker does before it dies: read entries as `consumer` (pending, never acked)."""
    client = _client()
    try:
        client.xgroup_create(USAGE_STREAM, GROUP, id="0", mkstream=True)
    except redis.ResponseError:
        pass
    reply: Any = client.xreadgroup(GROUP, consumer, {USAGE_STREAM: ">"}, count=count)
    return [json.loads(fields[b"e"]) for _, fields in reply[0][1]]


def _pending() -> int:
    return int(_client().xpending(USAGE_STREAM, GROUP)["pending"])


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> int:
    """Batches of 10, so a few dozen events make several batches to read ahead."""
    monkeypatch.setattr(ingest, "BATCH", 10)
    return 10


def _delivered_keys() -> Counter[str]:
    events_batch(now=timezone.now() + timedelta(seconds=30))
    return Counter(
        event["idempotencyKey"]
        for delivery in WebhookDelivery.objects.all()
        for event in json.loads(bytes(delivery.body))["data"]["events"]
    )


def test_a_crash_between_commit_and_ack_replays_on_the_next_run_without_doubles(
    group: Group, small_batches: int
) -> None:
    endpoint_add(workspace=group.workspace, url="http://127.0.0.1:9/hook")
    _xadd([_event(group, n) for n in range(1, 36)])
    # This worker read 25 entries and committed their rows, then died before acknowledging.
    usage_events_store(events=_read_without_ack(ingest._consumer(), 25))
    assert UsageEvent.objects.count() == 25 and _pending() == 25

    stored = usage_ingest()

    assert stored == 35
    ids = sorted(UsageEvent.objects.values_list("request_id", flat=True))
    assert ids == [f"req-{n:06d}" for n in range(1, 36)]
    assert _pending() == 0 and _client().xlen(USAGE_STREAM) == 0
    keys = _delivered_keys()
    assert len(keys) == 35 and set(keys.values()) == {1}


def test_entries_a_dead_worker_committed_but_never_acked_are_reclaimed_without_doubles(
    group: Group,
) -> None:
    endpoint_add(workspace=group.workspace, url="http://127.0.0.1:9/hook")
    _xadd([_event(group, n) for n in range(1, 21)])
    usage_events_store(events=_read_without_ack("a-dead-worker", 12))
    client = _client()
    pending: list[Any] = [
        entry["message_id"] for entry in client.xpending_range(USAGE_STREAM, GROUP, "-", "+", 100)
    ]
    # Long idle, as the entries of a worker that died a while ago.
    client.xclaim(USAGE_STREAM, GROUP, "a-dead-worker", 0, pending, idle=ingest.CLAIM_IDLE_MS * 2)

    stored = usage_ingest()

    assert stored == 20 and UsageEvent.objects.count() == 20
    assert _pending() == 0 and client.xlen(USAGE_STREAM) == 0
    keys = _delivered_keys()
    assert len(keys) == 20 and set(keys.values()) == {1}


def test_a_run_reads_no_further_than_it_stores(group: Group, small_batches: int) -> None:
    _xadd([_event(group, n) for n in range(1, 51)])

    stored = usage_ingest(max_batches=2)

    assert stored == 20 and UsageEvent.objects.count() == 20
    # The reader ran no batch ahead past the last one stored: nothing left pending.
    assert _pending() == 0 and _client().xlen(USAGE_STREAM) == 30
    assert usage_ingest() == 30 and UsageEvent.objects.count() == 50


def test_many_batches_are_stored_once_each_in_stream_order(
    group: Group, small_batches: int
) -> None:
    _xadd([_event(group, n) for n in range(1, 96)])

    stored = usage_ingest()

    assert stored == 95
    ids = sorted(UsageEvent.objects.values_list("request_id", flat=True))
    assert ids == [f"req-{n:06d}" for n in range(1, 96)]
    assert _pending() == 0 and _client().xlen(USAGE_STREAM) == 0


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL outage")
def test_batches_read_ahead_while_the_database_refuses_are_never_acknowledged(
    transactional_db: None, group: Group, small_batches: int
) -> None:
    _xadd([_event(group, n) for n in range(1, 61)])
    usage_rows_ready()  # a worker that has stored batches before: its statements are built

    with _postgres_unreachable(), pytest.raises(OperationalError):
        usage_ingest()

    # Read (some of them ahead of the refused batch), none acknowledged or deleted.
    assert _pending() >= small_batches and _client().xlen(USAGE_STREAM) == 60
    assert UsageEvent.objects.count() == 0

    stored = usage_ingest()

    assert stored == 60 and UsageEvent.objects.count() == 60
    assert _pending() == 0 and _client().xlen(USAGE_STREAM) == 0


def _transaction_start() -> datetime:
    """When the running transaction began (PostgreSQL's now()); elsewhere, the clock."""
    if connection.vendor != "postgresql":
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)  # the store's transaction is a real one
@pytest.mark.parametrize("replayed", [False, True], ids=["copy", "staging"])
def test_rows_prepared_ahead_are_created_when_the_transaction_storing_them_began(
    group: Group, replayed: bool
) -> None:
    if replayed:  # one of the batch is stored already: the batch goes through the staging table
        usage_events_store(events=[_event(group, 0)])
    events = [_event(group, number) for number in range(int(not replayed), 4)]
    vendor = usage_rows_ready()
    rows = usage_rows_prepare(events=events, vendor=vendor)
    prepared = timezone.now()
    time.sleep(0.3)  # behind a slow write

    with transaction.atomic():
        storing = _transaction_start()
        usage_rows_store(rows)

    created = list(
        UsageEvent.objects.filter(
            request_id__in=[e["requestId"] for e in events[replayed:]]
        ).values_list("created_at", flat=True)
    )
    assert len(created) == 3 and storing - prepared >= timedelta(seconds=0.3)
    assert all(moment >= storing for moment in created), (prepared, storing, created)
