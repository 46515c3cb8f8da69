"""The in-flight journal: a request is noted while it runs, and a dead worker's requests become
cancelled usage events with their reservations settled (routing/journal.py)."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis
from django.conf import settings

from billing.models import UsageEvent
from billing.services.usage import USAGE_STREAM
from groups.limits import EnforcedLimit
from routing import journal
from routing.admission import limits_admit
from routing.authcache import KeyEntry
from routing.tasks import inflight_reap_task
from tests.proxy.conftest import SLUG, compatible_target, tenant_build
from tests.proxy.orphans import (
    current_usage,
    ingest_twice,
    key_entry,
    note_left,
    worker_record,
)
from tests.waiting import wait_until

CHAT = "/v1/chat/completions"
DAILY = [EnforcedLimit("grp_j", "grp_j", "USAGE", "TOKEN", "DAY", 100_000)]
# 40 tokens 25 ms apart: a one-second stream, so its note is flushed while it runs.
SLOW_STREAM = {
    "model": SLUG,
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "max_tokens": 40,
    "fake": {"delay_ms": 25},
}


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def _events() -> list[dict]:
    entries: list = _client().xrange(USAGE_STREAM) or []
    return [json.loads(fields[b"e"]) for _, fields in entries]


def _tenant_headers(workspace, upstream) -> dict[str, str]:
    tenant = tenant_build(workspace=workspace, targets=[compatible_target(upstream.url)])
    return {"Authorization": f"Bearer {tenant.key}"}


def _entry() -> KeyEntry:
    return key_entry(group_id="grp_j", key_prefix="sky_journal00001", limits=DAILY)


def _orphan(
    request_id: str,
    *,
    worker: str,
    body_bytes: int,
    reserve: int,
    key: str = "",
    entry: KeyEntry | None = None,
) -> None:
    """What a worker leaves behind when it is killed mid-request: a charged reservation and a
    note, no usage event."""

    async def run() -> None:
        admission = await limits_admit(limits=DAILY, reserve_tokens=reserve, slug=SLUG)
        await note_left(
            request_id,
            entry or _entry(),
            admission.reservation,
            worker=worker,
            body_bytes=body_bytes,
            metadata={"ticket": "T-1"},
            event_key=key,
        )

    asyncio.run(run())


def _tokens_today() -> int:
    return current_usage(DAILY)


def test_a_running_stream_is_noted_and_its_event_removes_the_note(gateway, workspace, upstream):
    headers = _tenant_headers(workspace, upstream)
    client = _client()

    with httpx.stream(
        "POST", f"{gateway.url}{CHAT}", json=SLOW_STREAM, headers=headers
    ) as response:
        noted = wait_until(lambda: client.hkeys(journal.INFLIGHT_KEY), timeout=5)
        response.read()

    assert noted == [response.headers["x-request-id"].encode()]
    assert client.hlen(journal.INFLIGHT_KEY) == 0
    assert [e["requestId"] for e in _events()] == [response.headers["x-request-id"]]


def test_a_request_that_ends_before_the_flush_costs_no_redis_command():
    async def run() -> tuple[bool, dict]:
        client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        await client.config_resetstat()
        book = journal.Journal()
        book.open("req-quick", lambda: "{}")
        held = book.end("req-quick")
        await book.flush(client)
        stats = await client.info("commandstats")
        await client.aclose()
        return held, stats

    held, stats = asyncio.run(run())

    assert held is False, "the event is recorded with a plain XADD, no HDEL"
    assert "cmdstat_hset" not in stats and "cmdstat_hdel" not in stats, sorted(stats)


def test_quick_requests_through_the_gateway_leave_no_note(gateway, workspace, upstream):
    body = {"model": SLUG, "messages": [{"role": "user", "content": "hi"}]}
    headers = _tenant_headers(workspace, upstream)

    responses = [httpx.post(f"{gateway.url}{CHAT}", json=body, headers=headers) for _ in range(20)]

    assert [r.status_code for r in responses] == [200] * 20
    # A note caught by a flush is deleted with its event, or just after the flush returns.
    wait_until(lambda: _client().hlen(journal.INFLIGHT_KEY) == 0, timeout=2)
    assert len(_events()) == 20


def test_a_note_ended_during_its_flush_is_deleted_after_it():
    async def run() -> tuple[bool, int, bool]:
        client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        book = journal.Journal()
        book.open("req-a", lambda: "{}")
        book.open("req-b", lambda: "{}")
        flushing = asyncio.ensure_future(book.flush(client))
        await asyncio.sleep(0)  # the flush has taken the batch and is waiting on Redis
        ended_in_flight = book.end("req-a")
        await flushing
        left = await client.hlen(journal.INFLIGHT_KEY)
        written = book.end("req-b")
        await client.aclose()
        return ended_in_flight, left, written

    ended_in_flight, left, written = asyncio.run(run())

    assert (ended_in_flight, left, written) == (False, 1, True)


def test_a_request_refused_upstream_leaves_no_note(gateway, workspace, unavailable_upstream):
    tenant = tenant_build(
        workspace=workspace, targets=[compatible_target(unavailable_upstream.url)]
    )
    body = {"model": SLUG, "messages": [{"role": "user", "content": "hi"}]}

    response = httpx.post(
        f"{gateway.url}{CHAT}", json=body, headers={"Authorization": f"Bearer {tenant.key}"}
    )

    assert response.status_code >= 500
    assert _client().hlen(journal.INFLIGHT_KEY) == 0
    assert _events() == []


def test_a_dead_workers_request_becomes_one_cancelled_event_and_its_reservation_settles(
    workspace,
):
    _orphan("req-dead-1", worker="gone:1:X", body_bytes=400, reserve=4_100)
    assert _tokens_today() == 4_100
    client = _client()

    first = journal.journal_reap(client=client)
    later = journal.journal_reap(client=client, now=_now() + journal.MISSING_GRACE + 1)
    again = journal.journal_reap(client=client, now=_now() + journal.MISSING_GRACE + 2)

    assert (first, later, again) == (0, 1, 0), "reaped once, after the heartbeat stayed missing"
    [event] = _events()
    assert event["requestId"] == "req-dead-1" and event["status"] == "cancelled"
    assert event["usageEstimated"] is True and event["requestMetadata"] == {"ticket": "T-1"}
    assert event["tokens"] == {"inputTokens": 100, "outputTokens": 0, "cachedInputTokens": 0}
    assert _tokens_today() == 100, "the reservation is settled to the event's tokens"
    assert client.hlen(journal.INFLIGHT_KEY) == 0


def test_the_beat_task_reaps_a_dead_workers_request(workspace):
    _orphan("req-dead-2", worker="gone:4:W", body_bytes=400, reserve=4_100)
    client = _client()
    missing_since = _now() - journal.MISSING_GRACE - 1
    client.set(journal.MISSING_PREFIX + "gone:4:W", repr(missing_since))

    reaped = inflight_reap_task.apply().get()

    assert reaped == 1
    [event] = _events()
    assert event["requestId"] == "req-dead-2" and event["status"] == "cancelled"
    assert _tokens_today() == 100
    assert client.hlen(journal.INFLIGHT_KEY) == 0


def test_a_live_workers_requests_are_never_reaped(workspace):
    client = _client()
    client.set(journal.WORKER_PREFIX + "alive:2:Y", "1", ex=journal.HEARTBEAT_TTL)
    _orphan("req-live-1", worker="alive:2:Y", body_bytes=40, reserve=50)

    reaped = [journal.journal_reap(client=client, now=_now() + 60 * k) for k in range(3)]

    assert reaped == [0, 0, 0]
    assert client.hlen(journal.INFLIGHT_KEY) == 1 and _events() == []


def _reaper_on(worker: str) -> None:
    """The reaper has seen `worker`'s heartbeat missing for long enough: its next pass reaps."""
    since = _now() - journal.MISSING_GRACE - 1
    _client().set(journal.MISSING_PREFIX + worker, repr(since))


@pytest.mark.django_db
@pytest.mark.parametrize("first", ["reaper", "worker"])
def test_a_reaped_request_and_its_late_worker_put_one_event_in_the_stream_and_one_row(
    workspace, first
):
    from groups.models import Group

    group = Group(workspace=workspace, external_entity_id="cust_j")
    group.root = group
    group.save()
    entry = replace(_entry(), group_id=group.id, workspace_id=workspace.id)
    key = "01JE6Q2M7X0P4TQ0J8ZB3N5K1V"
    _orphan("req-late-1", worker="gone:3:Z", body_bytes=40, reserve=50, key=key, entry=entry)
    _reaper_on("gone:3:Z")
    client = _client()

    if first == "reaper":
        reaped = journal.journal_reap(client=client)
        worker_record("req-late-1", entry, event_key=key, status="completed")
    else:
        worker_record("req-late-1", entry, event_key=key, status="completed")
        reaped = journal.journal_reap(client=client)

    [event] = _events()
    assert reaped == (1 if first == "reaper" else 0)
    assert event["idempotencyKey"] == key
    assert event["status"] == ("cancelled" if first == "reaper" else "completed")
    # The stream entry delivered again (a reclaim after a crash) meets its own row.
    ingest_twice()
    [stored] = UsageEvent.objects.filter(request_id="req-late-1")
    assert stored.idempotency_key == key and stored.status == event["status"]


def _race(request_id: str, key: str) -> list[int]:
    """A reaper pass and the worker's record step started together on one note."""
    start = threading.Barrier(2)
    claimed: list[int] = []

    def reap() -> None:
        start.wait()
        claimed.append(journal.journal_reap(client=_client()))

    def record() -> None:
        start.wait()
        worker_record(request_id, _entry(), event_key=key, status="completed")

    threads = [threading.Thread(target=reap), threading.Thread(target=record)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    return claimed


def test_a_reaper_and_the_worker_racing_for_one_note_add_one_event(workspace):
    client = _client()
    _reaper_on("gone:6:R")
    reaped = 0
    for n in range(12):
        request_id, key = f"req-race-{n}", f"01JE6Q2M7X0P4TQ0J8ZB3N{n:04d}"
        _orphan(request_id, worker="gone:6:R", body_bytes=40, reserve=50, key=key)
        claimed = _race(request_id, key)
        [event] = [e for e in _events() if e["requestId"] == request_id]
        assert event["idempotencyKey"] == key
        assert event["status"] == ("cancelled" if claimed == [1] else "completed")
        reaped += claimed[0]
    assert client.hlen(journal.INFLIGHT_KEY) == 0 and len(_events()) == 12
    assert [e["status"] for e in _events()].count("cancelled") == reaped


def test_a_reaped_event_carries_its_notes_key_and_the_time_it_was_reaped(workspace):
    key = "01JE6Q2M7X0P4TQ0J8ZB3N5K1V"
    _orphan("req-dead-3", worker="gone:5:V", body_bytes=40, reserve=50, key=key)
    client = _client()
    _reaper_on("gone:5:V")
    before = datetime.now(UTC)

    journal.journal_reap(client=client)

    [event] = _events()
    at = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    assert event["idempotencyKey"] == key
    assert before - timedelta(milliseconds=1) <= at <= datetime.now(UTC)


def test_a_running_requests_note_carries_its_events_key_and_the_event_its_end_time(
    gateway, workspace, upstream
):
    headers = _tenant_headers(workspace, upstream)
    client = _client()

    with httpx.stream(
        "POST", f"{gateway.url}{CHAT}", json=SLOW_STREAM, headers=headers
    ) as response:
        wait_until(lambda: client.hkeys(journal.INFLIGHT_KEY), timeout=5)
        [raw] = client.hvals(journal.INFLIGHT_KEY)
        noted = datetime.now(UTC)
        response.read()

    note, [event] = json.loads(raw), _events()
    ended = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    assert note["idempotencyKey"] == event["idempotencyKey"] and "timestamp" not in note
    admitted = datetime.fromtimestamp(note["at"], UTC)  # about when its note was built
    # 40 tokens 25 ms apart: a one-second stream, stamped when it ended.
    assert ended >= noted - timedelta(milliseconds=1)
    assert ended - admitted > timedelta(milliseconds=800)


def _now() -> float:
    seconds, micros = _client().time()
    return seconds + micros / 1e6
