"""The usage event table's daily partitions on PostgreSQL: created ahead (at migrate time and by
the beat), an event of any time stored, idempotency kept across partitions, and retention dropping
only old partitions whose events are all final. SQLite keeps one plain table."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.models import DeliveryStatus, UsageEvent, WebhookDelivery, WebhookEndpoint
from billing.selectors import EventsWindow, _events_in
from billing.services import batching, rollup
from billing.services.batching import events_batch
from billing.services.ingest import usage_ingest
from billing.services.partitions import (
    AHEAD_DAYS,
    DEFAULT_PARTITION,
    events_partitioned,
    partition_days,
    partition_name,
    partitions_ensure,
    partitions_retire,
)
from billing.services.usage import USAGE_STREAM
from billing.tasks import events_partitions_task
from gateway_project.kernel.admin_paging import table_estimate
from groups.models import Group, Workspace
from routing import journal
from tests.billing.conftest import endpoint_add
from tests.billing.stream_events import stream_event
from tests.proxy.orphans import ingest_twice, key_entry, note_left, worker_record

postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="partitions exist on PostgreSQL only"
)


@pytest.fixture
def webhook_endpoint(workspace: Workspace) -> WebhookEndpoint:
    """An endpoint the tests never send to (batching only freezes deliveries for it)."""
    return endpoint_add(workspace=workspace, url="https://hooks.example.com/billing")


def _today() -> date:
    return timezone.now().astimezone(UTC).date()


def _where(request_id: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text FROM billing_usageevent WHERE request_id = %s",
            [request_id],
        )
        return str(cursor.fetchone()[0])


def _xadd(*events: dict[str, Any]) -> None:
    client = redis.Redis.from_url(settings.REDIS_URL)
    for event in events:
        client.xadd(USAGE_STREAM, {"e": json.dumps(event)})


@postgresql
@pytest.mark.django_db
def test_migrate_left_partitions_from_yesterday_to_a_week_ahead() -> None:
    days = partition_days()

    today = _today()
    assert events_partitioned()
    assert {today + timedelta(days=n) for n in range(-1, AHEAD_DAYS + 1)} <= set(days)


@postgresql
@pytest.mark.django_db
def test_the_beat_task_creates_the_partitions_ahead() -> None:
    ahead = _today() + timedelta(days=AHEAD_DAYS)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {partition_name(ahead)}")
    assert ahead not in partition_days()

    events_partitions_task.apply().get()

    assert partition_days()[ahead] == partition_name(ahead)


@postgresql
@pytest.mark.django_db
def test_creating_partitions_again_creates_nothing() -> None:
    later = _today() + timedelta(days=40)

    first = partitions_ensure(today=later)
    again = partitions_ensure(today=later)

    assert first == [partition_name(later + timedelta(days=n)) for n in range(-1, AHEAD_DAYS + 1)]
    assert again == []


@postgresql
@pytest.mark.django_db
@pytest.mark.parametrize(
    "moment", ["1999-01-01T00:00:00.000Z", "2199-12-31T23:59:59.999Z", "2026-02-29T12:00:00Z"]
)
def test_an_event_of_any_time_is_stored_then_moved_into_its_own_partition(
    group: Group, moment: str
) -> None:
    _xadd(stream_event(group, "req-odd", "01JE6Q2M7X0P4TQ0J8ZB3N5K1V", timestamp=moment))

    usage_ingest()
    landed = _where("req-odd")
    partitions_ensure()

    assert landed in (DEFAULT_PARTITION, partition_name(_day(moment)))
    assert _where("req-odd") == partition_name(_day(moment))
    assert UsageEvent.objects.filter(request_id="req-odd").count() == 1


def _day(moment: str) -> date:
    try:
        return datetime.fromisoformat(moment.replace("Z", "+00:00")).date()
    except ValueError:  # 2026-02-29 does not exist: the key's time is used
        return date(2024, 12, 3)


@pytest.mark.django_db
def test_an_unreadable_timestamp_takes_the_keys_time_and_a_replay_meets_it(group: Group) -> None:
    event = stream_event(group, "req-bad-time", "01JE6Q2M7X0P4TQ0J8ZB3N5K1V", timestamp="soon")
    _xadd(event)
    usage_ingest()

    _xadd(event)
    usage_ingest()

    [stored] = UsageEvent.objects.filter(request_id="req-bad-time")
    assert stored.timestamp == datetime(2024, 12, 3, 16, 53, 54, 45000, tzinfo=UTC)
    assert "the idempotency key's time used" in stored.ingest_note


@pytest.mark.django_db
def test_a_replay_after_midnight_makes_no_second_row_or_webhook_event(
    group: Group, webhook_endpoint: WebhookEndpoint
) -> None:
    before = stream_event(
        group, "req-midnight", "01JE6Q2M7X0P4TQ0J8ZB3N5K1V", timestamp="2026-12-01T23:59:59.999Z"
    )
    after = stream_event(
        group, "req-after", "01JE6Q2M7X0P4TQ0J8ZB3N5K1W", timestamp="2026-12-02T00:00:00.000Z"
    )
    _xadd(before)
    usage_ingest()
    events_batch(now=timezone.now() + timedelta(seconds=60))

    # The same stream entry again (a reclaim), beside a new event of the next day.
    _xadd(before, after, before)
    usage_ingest()
    events_batch(now=timezone.now() + timedelta(seconds=120))

    assert UsageEvent.objects.filter(request_id="req-midnight").count() == 1
    sent = [
        event["requestId"]
        for body in WebhookDelivery.objects.values_list("body", flat=True)
        for event in json.loads(bytes(body))["data"]["events"]
    ]
    assert sorted(sent) == ["req-after", "req-midnight"]


@pytest.mark.django_db
@pytest.mark.parametrize("first", ["reaper", "worker"])
def test_a_reaped_request_and_its_late_worker_store_one_event(group: Group, first: str) -> None:
    # The reaper's event is stamped when it reaps, the worker's when it ends: two times, maybe two
    # days. One request still puts one entry in the stream (the note is taken once), and that
    # entry read again lands on its own row.
    entry = replace(
        key_entry(group_id=group.id, key_prefix="sky_partition0001", limits=[]),
        workspace_id=group.workspace_id,
        external_id="cust_42",
    )
    key, worker = "01JE6Q2M7X0P4TQ0J8ZB3N5K1V", "gone:7:P"
    asyncio.run(note_left("req-reaped", entry, None, worker=worker, body_bytes=40, event_key=key))
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.set(journal.MISSING_PREFIX + worker, repr(time.time() - journal.MISSING_GRACE - 1))

    steps = [
        lambda: journal.journal_reap(client=client),
        lambda: worker_record("req-reaped", entry, event_key=key, status="completed"),
    ]
    for step in steps if first == "reaper" else steps[::-1]:
        step()
    ingest_twice()

    [stored] = UsageEvent.objects.filter(request_id="req-reaped")
    assert stored.idempotency_key == key
    assert stored.status == ("cancelled" if first == "reaper" else "completed")


@pytest.mark.django_db
def test_no_event_is_lost_or_doubled_when_the_whole_stream_is_replayed(
    group: Group, webhook_endpoint: WebhookEndpoint
) -> None:
    days = ["2026-11-30", "2026-12-01", "2026-12-02", "1990-06-01", "2150-01-01"]
    events = [
        stream_event(
            group,
            f"req-replay-{n}",
            f"01JE6Q2M7X0P4TQ0J8ZB3N{n:04d}",
            timestamp=f"{days[n % len(days)]}T{n % 24:02d}:00:00.000Z",
        )
        for n in range(60)
    ]
    _xadd(*events[:40])
    usage_ingest()

    _xadd(*events)  # everything again, and 20 new
    usage_ingest()
    if events_partitioned():  # the far days' events move out of the default partition
        partitions_ensure()
    events_batch(now=timezone.now() + timedelta(seconds=60))

    assert UsageEvent.objects.count() == 60
    assert sum(WebhookDelivery.objects.values_list("event_count", flat=True)) == 60


def _old_event(group: Group, make_event: Any, days_ago: int, **fields: Any) -> UsageEvent:
    at = timezone.now() - timedelta(days=days_ago)
    return make_event(timestamp=at, **{"batched_at": at, **fields})


def _delivery(endpoint: WebhookEndpoint, batch: str, status: str) -> None:
    WebhookDelivery.objects.create(
        endpoint=endpoint, body=b"{}", event_count=1, batch=batch, status=status
    )


@postgresql
@pytest.mark.django_db
def test_retention_drops_only_old_partitions_whose_events_are_all_final(
    group: Group, make_event: Any, webhook_endpoint: WebhookEndpoint
) -> None:
    cases = {
        500: ("b-delivered", DeliveryStatus.DELIVERED, True),
        499: ("b-failed", DeliveryStatus.FAILED, True),
        498: ("b-no-endpoint", None, True),
        497: ("b-pending", DeliveryStatus.PENDING, False),
        496: ("b-disabled", DeliveryStatus.DISABLED, False),
        495: ("b-quarantined", DeliveryStatus.QUARANTINED, False),
        10: ("b-recent", DeliveryStatus.DELIVERED, False),
    }
    for days_ago, (batch, status, _) in cases.items():
        _old_event(group, make_event, days_ago, batch=batch)
        _old_event(group, make_event, days_ago, batch="b-delivered-too")
        if status is not None:
            _delivery(webhook_endpoint, batch, status)
    _delivery(webhook_endpoint, "b-delivered-too", DeliveryStatus.DELIVERED)
    _old_event(group, make_event, 490, batched_at=None)
    quarantined = _old_event(group, make_event, 489)
    UsageEvent.objects.filter(pk=quarantined.pk).update(
        batched_at=None, quarantined_at=timezone.now()
    )
    partitions_ensure()
    days = {days_ago: (_today() - timedelta(days=days_ago)) for days_ago in [*cases, 490, 489]}

    retired = partitions_retire(retention_days=400)

    dropped = {partition_name(days[n]) for n, (_, _, drop) in cases.items() if drop}
    assert set(retired.dropped) == dropped
    assert set(retired.kept) == {partition_name(days[n]) for n in (497, 496, 495, 490, 489)}
    remaining = set(partition_days())
    assert not {days[n] for n in (500, 499, 498)} & remaining
    assert {days[n] for n in (497, 496, 495, 490, 489, 10)} <= remaining
    assert UsageEvent.objects.count() == 2 * 4 + 2


@postgresql
@pytest.mark.django_db
def test_retention_waits_while_an_older_unlinked_delivery_is_not_final(
    group: Group, make_event: Any, webhook_endpoint: WebhookEndpoint
) -> None:
    _old_event(group, make_event, 500, batch="")
    _delivery(webhook_endpoint, "", DeliveryStatus.PENDING)
    partitions_ensure()

    retired = partitions_retire(retention_days=400)

    assert retired.dropped == []
    assert list(retired.kept.values()) == [
        "a delivery from before deliveries named their events is not final"
    ]


@postgresql
@pytest.mark.django_db
def test_no_retention_keeps_every_partition(group: Group, make_event: Any) -> None:
    _old_event(group, make_event, 5000, batch="b-none")
    partitions_ensure()

    retired = partitions_retire(retention_days=0)

    assert retired.dropped == [] and UsageEvent.objects.count() == 1


@postgresql
@pytest.mark.django_db
def test_a_one_day_events_page_reads_one_partitions_index(group: Group, make_event: Any) -> None:
    start = datetime.combine(_today(), datetime.min.time(), tzinfo=UTC)
    events = _events_in(
        workspace=group.workspace, window=EventsWindow(start=start, end=start + timedelta(days=1))
    )
    sql, params = events.order_by("timestamp", "idempotency_key")[:101].query.sql_with_params()

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "Seq Scan" not in plan, plan
    scanned = {name for name in partition_days().values() if name in plan}
    assert scanned == {partition_name(_today())}, plan


@postgresql
@pytest.mark.django_db
def test_the_rollup_and_batching_read_events_by_index_in_every_partition(
    group: Group, make_event: Any
) -> None:
    for days in (-1, 0, 1):
        make_event(timestamp=timezone.now() + timedelta(days=days))
    now = timezone.now()
    with CaptureQueriesContext(connection) as queries:
        rollup._first_created(since=now - timedelta(hours=6), before=now)
        rollup._add(since=now - timedelta(hours=6), before=now - timedelta(hours=1))
        list(batching._due_query())
        list(
            UsageEvent.objects.filter(
                workspace_id=group.workspace_id,
                batched_at__isnull=True,
                quarantined_at__isnull=True,
            ).order_by("timestamp", "idempotency_key")[:100]
        )
    reads = [q["sql"] for q in queries.captured_queries if "billing_usageevent" in q["sql"]]

    assert len(reads) == 4, reads
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        # The rollup's by the created_at index, the batching's by the unbatched events' index,
        # a batch's claim by either index of its workspace.
        indexes = ["_created_at_idx"] * 2 + ["_workspace_id_created_at_idx", "_workspace_id_"]
        for sql, index in zip(reads, indexes, strict=True):
            cursor.execute(f"EXPLAIN {sql}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "Seq Scan" not in plan, plan
            assert plan.count(index) >= len(partition_days()), plan


@postgresql
@pytest.mark.django_db
def test_batching_plans_its_due_query_once_per_connection(group: Group, make_event: Any) -> None:
    make_event(timestamp=timezone.now() - timedelta(days=2))
    later = timezone.now() + timedelta(minutes=5)
    batching._workspaces_due(now=later)

    with CaptureQueriesContext(connection) as queries:
        due = batching._workspaces_due(now=later)

    assert [(d.workspace_id, d.take) for d in due] == [(group.workspace_id, 1)]
    assert [q["sql"] for q in queries.captured_queries] == [f"EXECUTE {batching.DUE_STATEMENT}"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement FROM pg_prepared_statements WHERE name = %s",
            [batching.DUE_STATEMENT],
        )
        assert "billing_usageevent" in cursor.fetchone()[0]


@postgresql
@pytest.mark.django_db
def test_batching_claims_events_from_the_days_it_saw_only(group: Group, make_event: Any) -> None:
    for days in (-1, 0):
        make_event(timestamp=timezone.now() + timedelta(days=days))
    later = timezone.now() + timedelta(minutes=5)

    with CaptureQueriesContext(connection) as queries:
        events_batch(now=later)

    assert UsageEvent.objects.filter(batched_at__isnull=True).count() == 0
    claims = [q["sql"] for q in queries.captured_queries if "SKIP LOCKED" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {claims[0]}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    scanned = {name for name in partition_days().values() if name in plan}
    assert len(claims) == 1
    assert scanned == {partition_name(_today() - timedelta(days=1)), partition_name(_today())}


def _due_statement_lost() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DEALLOCATE {batching.DUE_STATEMENT}")


def _due_statement_forgotten() -> None:
    batching._due_prepared.discard(connection.connection)


# What a pooler lending server sessions per transaction does: the session executing the due query
# lacks it, or the session preparing it holds it already.
@postgresql
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("session_change", [_due_statement_lost, _due_statement_forgotten])
def test_batching_finds_its_due_query_whichever_session_it_gets(
    group: Group, make_event: Any, session_change: Callable[[], None]
) -> None:
    make_event(timestamp=timezone.now() - timedelta(days=2))
    later = timezone.now() + timedelta(minutes=5)
    batching._workspaces_due(now=later)
    session_change()

    due = batching._workspaces_due(now=later)

    assert [(d.workspace_id, d.take) for d in due] == [(group.workspace_id, 1)]


@pytest.mark.skipif(connection.vendor == "postgresql", reason="the SQLite path")
@pytest.mark.django_db
def test_sqlite_keeps_one_plain_table(group: Group) -> None:
    _xadd(
        stream_event(group, "req-plain", "01JE6Q2M7X0P4TQ0J8ZB3N5K1V"),
        stream_event(group, "req-plain", "01JE6Q2M7X0P4TQ0J8ZB3N5K1V"),
    )

    usage_ingest()
    dropped = events_partitions_task.apply().get()

    assert not events_partitioned() and dropped == 0
    assert UsageEvent.objects.filter(request_id="req-plain").count() == 1


def _migrate(target: str | None) -> None:
    """Migrate billing to `target` (None: its latest migration)."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    if target is None:
        executor.migrate([key for key in executor.loader.graph.leaf_nodes() if key[0] == "billing"])
    else:
        executor.migrate([("billing", target)])


@pytest.fixture
def billing_migrated_back() -> Iterator[None]:
    """The test migrates billing back and forth; the later tests get its latest schema again."""
    yield
    _migrate(None)


@postgresql
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("billing_migrated_back")
def test_the_migration_moves_existing_events_into_their_days_partitions(group: Group) -> None:
    _migrate("0004_usage_event_cost")
    moments = ["2026-12-03 10:00+00", "2026-11-20 10:00+00", "1999-01-01 00:00+00"]
    with connection.cursor() as cursor:
        for n, moment in enumerate(moments):
            cursor.execute(
                "INSERT INTO billing_usageevent (idempotency_key, request_id, timestamp, "
                "external_entity_id, api_key_prefix, model_slug, request_metadata, status, "
                "input_tokens, output_tokens, cached_input_tokens, usage_estimated, http_status, "
                "target, total_ms, upstream_ms, created_at, group_id, workspace_id, ingest_note, "
                "quarantine_error, batch, cost_currency) VALUES (%s, %s, %s, '', '', 'a/b', '{}', "
                "'completed', 1, 2, 0, false, 200, '', 0, 0, now(), %s, %s, '', '', '', '')",
                [
                    f"01JE6Q2M7X0P4TQ0J8ZB3N5K{n:02d}",
                    f"req-old-{n}",
                    moment,
                    group.pk,
                    group.workspace_id,
                ],
            )

    _migrate("0005_usage_event_partitions")

    assert events_partitioned()
    assert [_where(f"req-old-{n}") for n in range(3)] == [
        partition_name(date(2026, 12, 3)),
        partition_name(date(2026, 11, 20)),
        partition_name(date(1999, 1, 1)),
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'billing_usageevent'::regclass AND contype IN ('p', 'u') ORDER BY 1"
        )
        keys = [row[0] for row in cursor.fetchall()]
    assert keys == [
        'PRIMARY KEY (idempotency_key, "timestamp")',
        'UNIQUE (request_id, "timestamp")',
    ]


@postgresql
@pytest.mark.django_db
def test_the_admins_estimate_of_the_events_adds_up_their_partitions(make_event: Any) -> None:
    for days_ago in (0, 0, 3):
        make_event(timestamp=timezone.now() - timedelta(days=days_ago))
    partitions_ensure()
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {UsageEvent._meta.db_table}")

    estimate = table_estimate(UsageEvent.objects.all())

    assert estimate == 3


@postgresql
@pytest.mark.django_db
def test_batching_updates_read_only_the_partition_of_their_events(
    make_event: Any, webhook_endpoint: WebhookEndpoint
) -> None:
    make_event()
    make_event()
    with CaptureQueriesContext(connection) as captured:
        events_batch(now=timezone.now() + timedelta(seconds=60))
    updates = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("UPDATE")]

    plans = []
    with connection.cursor() as cursor:
        for sql in updates:
            cursor.execute(f"EXPLAIN {sql}")
            plans.append("\n".join(row[0] for row in cursor.fetchall()))

    assert len(plans) == 2
    for plan in plans:
        scanned = {name for name in partition_days().values() if name in plan}
        assert scanned == {partition_name(_today())}, plan
