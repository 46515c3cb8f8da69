"""One bad row never stops billing: in every stage (ingest, batching, enqueue, send) a poisoned
event or delivery is set aside, visibly, and every good one around it is still delivered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.models import UsageEvent, WebhookDelivery, WebhookEndpoint
from billing.services.attempts import delivery_attempt_run
from billing.services.batching import events_batch
from billing.services.ingest import usage_ingest
from billing.services.usage import (
    BILLING_METRICS_KEY,
    DEAD_LETTER_STREAM,
    DEAD_LETTERS_METRIC,
    USAGE_STREAM,
)
from billing.tasks import deliveries_enqueue_due
from billing.wire import event_bytes
from groups.models import Group, Workspace
from groups.services import group_delete
from groups.services.audit import SYSTEM_ACTOR
from keys.services import management_key_create
from routing.metrics import metrics_gather
from tests.billing.conftest import batched_delivery, endpoint_add
from tests.billing.scripted_server import Reply, ScriptedServer
from tests.fakes.webhook_receiver import WebhookReceiverThread

# Metadata as it arrives in the stream (raw JSON text), each of which PostgreSQL's jsonb refuses
# or which a batch cannot serialize, and what is kept of it.
POISONED_METADATA = {
    "lone_surrogate": ('{"a":"\\ud800","b":"kept"}', {"a": "", "b": "kept"}),
    "nul": ('{"a":"x\\u0000y"}', {"a": "xy"}),
    "nan": ('{"a":NaN}', {}),
    "infinity": ('{"a":Infinity}', {}),
    "overflowing_number": ('{"a":1e999}', {}),
    "deep_nesting": ('{"a":' + "[" * 200 + "]" * 200 + "}", {}),
    "not_an_object": ("[1,2]", {}),
}


def stream_event(group: Group, request_id: str, *, metadata: str = '{"trace":"t-1"}') -> bytes:
    """The raw bytes of one usage stream entry, with `metadata` spliced in as JSON text."""
    event = {
        "idempotencyKey": f"01J9X7Y0Z3K4M5N6P7Q8{request_id[-6:]:0>6}",
        "timestamp": "2026-05-05T12:00:00.123Z",
        "requestId": request_id,
        "requestMetadata": "__metadata__",
        "modelSlug": "acme/llama",
        "externalEntityId": "cust_42",
        "apiKeyPrefix": "sky_abc123",
        "groupId": group.id,
        "workspaceId": group.workspace_id,
        "status": "completed",
        "tokens": {"inputTokens": 10, "outputTokens": 20, "cachedInputTokens": 0},
    }
    return json.dumps(event).replace('"__metadata__"', metadata).encode()


def stream_redis() -> redis.Redis:
    """The Redis holding the usage stream, its dead letters and billing's /metrics numbers."""
    return redis.Redis.from_url(settings.REDIS_URL)


def stream_add(*payloads: bytes) -> None:
    client = stream_redis()
    for payload in payloads:
        client.xadd(USAGE_STREAM, {"e": payload})


def dead_letters_counted() -> int:
    value = stream_redis().hget(BILLING_METRICS_KEY, DEAD_LETTERS_METRIC)
    return int(value or 0)


# --- ingest ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(POISONED_METADATA))
def test_ingest_bills_the_tokens_of_an_event_whose_metadata_the_database_refuses(
    group: Group, kind: str
) -> None:
    raw, kept = POISONED_METADATA[kind]
    stream_add(stream_event(group, "req-000001"), stream_event(group, "req-000002", metadata=raw))

    stored = usage_ingest()

    poisoned = UsageEvent.objects.get(request_id="req-000002")
    assert stored == 2
    assert (poisoned.input_tokens, poisoned.output_tokens) == (10, 20)
    assert poisoned.request_metadata == kept
    assert poisoned.ingest_note.startswith("requestMetadata")
    assert UsageEvent.objects.get(request_id="req-000001").ingest_note == ""
    assert dead_letters_counted() == 0


def database_refuses_metadata_holding(key: str) -> None:
    """Make the database refuse, for a reason ingest cannot foresee, metadata holding `key`."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "ALTER TABLE billing_usageevent ADD CONSTRAINT refuse_marked"
                f" CHECK (NOT (request_metadata ? '{key}'))"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER refuse_marked BEFORE INSERT ON billing_usageevent"
                f" WHEN json_extract(NEW.request_metadata, '$.{key}') IS NOT NULL"
                " BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )


def test_an_event_the_database_refuses_is_stored_without_its_metadata(group: Group) -> None:
    database_refuses_metadata_holding("refuse")
    stream_add(
        stream_event(group, "req-000001"),
        stream_event(group, "req-000002", metadata='{"refuse":1}'),
    )

    stored = usage_ingest()

    refused = UsageEvent.objects.get(request_id="req-000002")
    assert stored == 2 and dead_letters_counted() == 0
    assert (refused.input_tokens, refused.request_metadata) == (10, {})
    assert refused.ingest_note.startswith("requestMetadata dropped: IntegrityError")


def test_unstorable_stream_entries_are_parked_and_counted_and_the_rest_is_stored(
    group: Group,
) -> None:
    no_group = json.loads(stream_event(group, "req-000003"))
    del no_group["groupId"]
    stream_add(
        stream_event(group, "req-000001"),
        b"{not json",
        b"[1, 2, 3]",
        json.dumps(no_group).encode(),
        stream_event(group, "req-000002"),
    )

    stored = usage_ingest()

    client = stream_redis()
    assert stored == 2
    assert sorted(UsageEvent.objects.values_list("request_id", flat=True)) == [
        "req-000001",
        "req-000002",
    ]
    assert client.xlen(DEAD_LETTER_STREAM) == 3 and client.xlen(USAGE_STREAM) == 0
    assert dead_letters_counted() == 3
    parked = client.xrange(DEAD_LETTER_STREAM)
    assert all(fields[b"error"] for _, fields in parked)  # type: ignore[union-attr, index]


def test_an_event_naming_no_group_of_its_workspace_is_parked_and_the_rest_is_stored(
    group: Group, other_workspace: Workspace
) -> None:
    unknown = json.loads(stream_event(group, "req-000002"))
    unknown["groupId"] = "grp_01J9X7Y0Z3K4M5N6P7Q8NOSUCH"
    elsewhere = json.loads(stream_event(group, "req-000003"))
    elsewhere["workspaceId"] = other_workspace.id
    stream_add(
        stream_event(group, "req-000001"),
        json.dumps(unknown).encode(),
        json.dumps(elsewhere).encode(),
        stream_event(group, "req-000004"),
    )

    stored = usage_ingest()

    client = stream_redis()
    assert stored == 2
    assert sorted(UsageEvent.objects.values_list("request_id", flat=True)) == [
        "req-000001",
        "req-000004",
    ]
    assert client.xlen(DEAD_LETTER_STREAM) == 2 and client.xlen(USAGE_STREAM) == 0
    parked = [fields[b"error"] for _, fields in client.xrange(DEAD_LETTER_STREAM)]  # type: ignore[union-attr, index]
    assert all(b"no such group in the event's workspace" in error for error in parked)


def test_an_event_of_a_deleted_group_is_still_billed(group: Group) -> None:
    group_delete(workspace=group.workspace, group_id=group.id, actor=SYSTEM_ACTOR)
    stream_add(stream_event(group, "req-000001"))

    stored = usage_ingest()

    assert stored == 1 and UsageEvent.objects.get().group_id == group.id


def test_unreadable_token_counts_do_not_stop_the_event_being_stored(group: Group) -> None:
    bad = json.loads(stream_event(group, "req-000001"))
    bad["tokens"] = {"inputTokens": 1e300, "outputTokens": "many", "cachedInputTokens": -1}
    bad["timestamp"] = 12
    stream_add(json.dumps(bad).encode())

    usage_ingest()

    event = UsageEvent.objects.get()
    assert (event.input_tokens, event.output_tokens, event.cached_input_tokens) == (0, 0, 0)
    assert "tokens.outputTokens" in event.ingest_note and "timestamp" in event.ingest_note


# --- batching, enqueue, send ------------------------------------------------------------------

# Stored metadata Python cannot read back (an integer past its 4300-digit limit), which jsonb
# and SQLite's JSON both accept.
UNREADABLE = '{"a":1' + "0" * 5000 + "}"


def metadata_poison(event: UsageEvent, raw: str = UNREADABLE) -> None:
    """Write `raw` JSON text as the event's stored metadata, bypassing every check."""
    cast = "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE billing_usageevent SET request_metadata = {cast} WHERE idempotency_key = %s",
            [raw, event.pk],
        )


def later(seconds: float = 10) -> datetime:
    return timezone.now() + timedelta(seconds=seconds)


@pytest.fixture
def poisoned_event(make_event: Callable[..., UsageEvent]) -> UsageEvent:
    """A stored event whose metadata Python cannot read back."""
    event = make_event()
    metadata_poison(event)
    return event


def test_batching_quarantines_an_event_it_cannot_serialize_and_batches_the_rest(
    poisoned_event: UsageEvent, make_event: Callable[..., UsageEvent], endpoint: WebhookEndpoint
) -> None:
    good = [make_event() for _ in range(3)]

    events_batch(now=later())

    delivery = WebhookDelivery.objects.get()
    sent = {e["idempotencyKey"] for e in json.loads(bytes(delivery.body))["data"]["events"]}
    assert sent == {e.pk for e in good} and delivery.event_count == 3
    poisoned_event.refresh_from_db()
    assert poisoned_event.quarantined_at is not None and poisoned_event.batched_at is None
    assert "unreadable requestMetadata" in poisoned_event.quarantine_error


@pytest.mark.parametrize("value", ["\ud800", float("nan"), float("inf")])
def test_an_event_a_receiver_could_not_parse_is_never_serialized(
    make_event: Callable[..., UsageEvent], value: object
) -> None:
    event = make_event()
    event.request_metadata = {"a": value}  # as SQLite reads back what it was given

    with pytest.raises(ValueError):
        event_bytes(event)


def test_the_beat_enqueues_and_delivers_everything_else_when_an_event_is_poisoned(
    eager: None,
    flush_now: None,
    poisoned_event: UsageEvent,
    make_event: Callable[..., UsageEvent],
    endpoint: WebhookEndpoint,
    receiver: WebhookReceiverThread,
) -> None:
    good = [make_event() for _ in range(3)]

    deliveries_enqueue_due()

    assert set(receiver.receiver.events()) == {e.pk for e in good}
    assert WebhookDelivery.objects.get().status == "delivered"
    assert UsageEvent.objects.filter(quarantined_at__isnull=False).count() == 1


def test_a_delivery_that_cannot_be_sent_is_quarantined_and_the_others_are_delivered(
    eager: None,
    flush_now: None,
    make_event: Callable[..., UsageEvent],
    endpoint: WebhookEndpoint,
    receiver: WebhookReceiverThread,
) -> None:
    events = [make_event() for _ in range(2)]
    good = batched_delivery(timezone.now())
    # A webhook-id header that cannot be encoded: the attempt raises before anything is sent.
    bad = WebhookDelivery.objects.create(
        id="dlv_unsendable_é",
        endpoint=endpoint,
        body=good.body,
        event_count=2,
        next_attempt_at=timezone.now(),
    )

    deliveries_enqueue_due()

    bad.refresh_from_db()
    assert set(receiver.receiver.events()) == {e.pk for e in events}
    assert WebhookDelivery.objects.get(pk=good.pk).status == "delivered"
    assert bad.status == "quarantined" and "UnicodeEncodeError" in bad.last_error
    assert bad.lease_until is None


def test_a_receiver_answering_nul_bytes_gets_its_attempt_recorded(
    make_event: Callable[..., UsageEvent], workspace: Any
) -> None:
    with ScriptedServer(Reply(500, body=b"bad\x00gateway")) as server:
        endpoint_add(workspace=workspace, url=server.url)
        make_event()
        delivery = batched_delivery(later())

        attempt = delivery_attempt_run(delivery_id=delivery.id, now=later())

    delivery.refresh_from_db()
    assert attempt is not None and attempt.response_body == "badgateway"
    assert delivery.status == "pending" and delivery.attempts == 1
    assert delivery.last_error == "badgateway"


def test_quarantined_rows_are_counted_on_metrics_and_released_by_staff(
    admin_client: Any,
    flush_now: None,
    poisoned_event: UsageEvent,
    endpoint: WebhookEndpoint,
    receiver: WebhookReceiverThread,
) -> None:
    bad = poisoned_event
    deliveries_enqueue_due()
    shown = admin_client.get("/admin/billing/usageevent/", {"quarantine": "quarantined"})
    detail = admin_client.get(f"/admin/billing/usageevent/{bad.pk}/change/")
    before = _metrics()

    metadata_poison(bad, '{"fixed": true}')
    admin_client.post(
        "/admin/billing/usageevent/", {"action": "release", "_selected_action": [bad.pk]}
    )
    deliveries_enqueue_due()

    assert shown.context["cl"].result_count == 1 and detail.status_code == 200
    assert "gateway_billing_quarantined_events 1.0" in before
    assert "gateway_billing_quarantined_events 0.0" in _metrics()
    bad.refresh_from_db()
    assert bad.quarantined_at is None and bad.batched_at is not None


def test_an_event_whose_metadata_can_never_be_sent_is_billed_once_released_without_it(
    admin_client: Any,
    eager: None,
    flush_now: None,
    poisoned_event: UsageEvent,
    endpoint: WebhookEndpoint,
    receiver: WebhookReceiverThread,
) -> None:
    bad = poisoned_event
    deliveries_enqueue_due()

    admin_client.post(
        "/admin/billing/usageevent/",
        {"action": "release_without_metadata", "_selected_action": [bad.pk], "confirm": "yes"},
    )
    deliveries_enqueue_due()

    assert receiver.receiver.events()[bad.pk]["requestMetadata"] == {}
    bad.refresh_from_db()
    assert bad.ingest_note.startswith("requestMetadata dropped by staff")


def test_releasing_needs_the_change_permission(
    client: Any, make_event: Callable[..., UsageEvent], django_user_model: Any
) -> None:
    bad = make_event()
    UsageEvent.objects.filter(pk=bad.pk).update(quarantined_at=timezone.now())
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_usageevent"))
    client.force_login(viewer)

    client.post("/admin/billing/usageevent/", {"action": "release", "_selected_action": [bad.pk]})

    bad.refresh_from_db()
    assert bad.quarantined_at is not None


def test_the_events_api_and_admin_pages_read_any_stored_row(
    make_event: Callable[..., UsageEvent], admin_client: Any, workspace: Any
) -> None:
    bad = make_event(timestamp=timezone.now() - timedelta(minutes=5))
    metadata_poison(bad)
    _, key = management_key_create(workspace=workspace, actor=SYSTEM_ACTOR, scope="VIEW")
    start = (timezone.now() - timedelta(hours=1)).isoformat().replace("+00:00", "Z")

    api = Client().get(
        "/v1/gateway/events", {"start_time": start}, HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    listing = admin_client.get("/admin/billing/usageevent/")
    detail = admin_client.get(f"/admin/billing/usageevent/{bad.pk}/change/")

    assert api.status_code == 200
    assert [e["idempotencyKey"] for e in api.json()["items"]] == [bad.pk]
    assert listing.status_code == 200 and detail.status_code == 200
    assert "unreadable requestMetadata" in detail.content.decode()


def _metrics() -> str:
    async def gather() -> bytes:
        client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        try:
            return await metrics_gather(client)
        finally:
            await client.aclose()

    return asyncio.run(gather()).decode()


def test_dead_letters_are_counted_on_metrics(group: Group) -> None:
    before = _metrics()
    stream_add(b"{not json")

    usage_ingest()

    assert "gateway_usage_dead_letters_total 0.0" in before
    assert "# TYPE gateway_usage_dead_letters_total counter" in before
    assert "gateway_billing_quarantined_deliveries 0.0" in before
    assert "gateway_usage_dead_letters_total 1.0" in _metrics()


# --- the in-flight reaper -------------------------------------------------------------------


def test_an_unreadable_in_flight_note_cannot_stop_the_reaper_for_the_others(group: Group) -> None:
    import time

    from routing.journal import INFLIGHT_KEY, MISSING_GRACE, journal_reap

    note = {
        "worker": "gone:1:X",
        "at": time.time(),
        "requestMetadata": {},
        "modelSlug": "acme/llama",
        "externalCustomerId": "cust_42",
        "apiKeyPrefix": "sky_abc123",
        "groupId": group.id,
        "workspaceId": group.workspace_id,
        "bodyBytes": 400,
        "reserved": 0,
        "counters": [],
    }
    client = stream_redis()
    client.hset(
        INFLIGHT_KEY,
        mapping={
            "req-good": json.dumps(note),
            "req-not-json": "{not json",
            "req-no-worker": json.dumps({**note, "worker": ["gone:1:X"]}),
            "req-bad-size": json.dumps({**note, "bodyBytes": "lots"}),
        },
    )

    reaped = [journal_reap(client=client, now=time.time() + MISSING_GRACE * k) for k in (0, 2)]

    usage_ingest()
    assert sum(reaped) == 1
    assert list(UsageEvent.objects.values_list("request_id", flat=True)) == ["req-good"]
    assert client.hlen(INFLIGHT_KEY) == 0
    assert dead_letters_counted() == 3


def test_a_workspace_and_group_found_once_are_not_looked_up_again(group: Group) -> None:
    stream_add(stream_event(group, "req-000001"))
    usage_ingest()
    stream_add(stream_event(group, "req-000002"))

    with CaptureQueriesContext(connection) as queries:
        stored = usage_ingest()

    assert stored == 1 and UsageEvent.objects.count() == 2
    assert not [q for q in queries.captured_queries if "groups_group" in q["sql"]]
