"""The record step's one round trip: the usage event, the end of the in-flight note and the settle
of the reservation go to Redis together, and neither a flushed script cache nor a Redis that does
not answer loses the event or the settle; a Redis that answers late or never holds the response no
longer than the record's timeout, and its late reply never reaches another command."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
import redis
from django.conf import settings
from pytest_django.fixtures import Settings

from billing.models import UsageEvent
from billing.services.usage import (
    USAGE_STREAM,
    ScriptCall,
    UsageRecord,
    usage_event_key,
    usage_record_write,
)
from groups.limits import EnforcedLimit
from groups.models import Group, Workspace
from routing.admission import limits_admit, settle_changes
from routing.journal import INFLIGHT_KEY
from routing.limit_counters import SCRIPT, SCRIPT_SHA, script_adjust_call
from routing.redis_pool import close_all, record_redis
from tests.fakes.model_server import FakeModelServerThread
from tests.fakes.redis_relay import RedisRelay
from tests.proxy.conftest import (
    SLUG,
    GatewayThread,
    compatible_target,
    gateway_serve,
    tenant_build,
)
from tests.proxy.orphans import current_usage, key_entry, usage_record

DAILY = [EnforcedLimit("grp_r", "grp_r", "USAGE", "TOKEN", "DAY", 100_000)]


def _record(request_id: str, group_id: str = "grp_r", workspace_id: str = "ws_r") -> UsageRecord:
    entry = key_entry(group_id=group_id, key_prefix="sky_record000001", limits=DAILY)
    entry = replace(entry, workspace_id=workspace_id, external_id="cust_r")
    return usage_record(request_id, entry, event_key=usage_event_key(), status="completed")


async def _settle_call(reserve: int, actual: int) -> ScriptCall:
    admission = await limits_admit(limits=DAILY, reserve_tokens=reserve, slug=SLUG)
    assert admission.reservation is not None
    counters, amounts = settle_changes(
        reservation=admission.reservation, actual_tokens=actual, actual_spend=0
    )
    keys, args = script_adjust_call(counters=counters, amounts=amounts)
    return ScriptCall(SCRIPT, SCRIPT_SHA, tuple(keys), tuple(args))


def _write(record: UsageRecord, *, url: str, flush_scripts: bool = False) -> bool:
    async def run() -> bool:
        also = await _settle_call(reserve=1000, actual=42)
        client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=1)
        if flush_scripts:
            await redis.asyncio.Redis.from_url(settings.REDIS_URL).script_flush()
        try:
            note = (INFLIGHT_KEY, record.request_id)
            return await usage_record_write(
                client=client, record=record, timeout=5, note=note, also=also
            )
        finally:
            await client.aclose()

    return asyncio.run(run())


def _events() -> list[dict]:
    entries: list = redis.Redis.from_url(settings.REDIS_URL).xrange(USAGE_STREAM) or []
    return [json.loads(fields[b"e"]) for _, fields in entries]


@pytest.mark.parametrize("flush_scripts", [False, True], ids=["scripts-cached", "scripts-flushed"])
def test_the_event_the_note_and_the_settle_go_in_one_step(flush_scripts: bool) -> None:
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.hset(INFLIGHT_KEY, "req-step-1", "{}")

    ran = _write(_record("req-step-1"), url=settings.REDIS_URL, flush_scripts=flush_scripts)

    assert ran is True
    assert [event["requestId"] for event in _events()] == ["req-step-1"]
    assert client.hlen(INFLIGHT_KEY) == 0
    assert current_usage(DAILY) == 42


def test_a_settle_that_fails_in_the_step_keeps_the_event_and_asks_for_a_retry() -> None:
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.hset(INFLIGHT_KEY, "req-step-5", "{}")
    client.set("gw:test:not-a-number", "abc")
    failing = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
    also = ScriptCall(
        failing, hashlib.sha1(failing.encode()).hexdigest(), ("gw:test:not-a-number",), (5,)
    )

    async def run() -> bool:
        async_client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        try:
            note = (INFLIGHT_KEY, "req-step-5")
            record = _record("req-step-5")
            return await usage_record_write(
                client=async_client, record=record, timeout=5, note=note, also=also
            )
        finally:
            await async_client.aclose()

    ran = asyncio.run(run())

    assert ran is False  # the caller retries the settle in the background
    assert [event["requestId"] for event in _events()] == ["req-step-5"]
    assert client.hlen(INFLIGHT_KEY) == 0


@pytest.mark.django_db(transaction=True)
def test_a_redis_that_does_not_answer_stores_the_event_directly_and_asks_for_a_retry(
    workspace,
) -> None:
    group = Group(workspace=workspace, external_entity_id="cust_r")
    group.root = group
    group.save()
    record = _record("req-step-2", group_id=group.id, workspace_id=workspace.id)

    ran = _write(record, url="redis://127.0.0.1:1/0")

    assert ran is False  # the caller retries the settle in the background
    assert list(UsageEvent.objects.values_list("request_id", flat=True)) == ["req-step-2"]
    assert current_usage(DAILY) == 1000  # still the reservation: nothing settled yet


def _workspace_record(workspace: Workspace, request_id: str) -> UsageRecord:
    group = Group(workspace=workspace, external_entity_id="cust_r")
    group.root = group
    group.save()
    return _record(request_id, group_id=group.id, workspace_id=workspace.id)


def _record_step(
    record: UsageRecord, *, held_by: RedisRelay | None = None
) -> tuple[bool, float, object]:
    """The gateway's record step on its own client (REDIS_URL, GATEWAY_USAGE_RECORD_TIMEOUT):
    whether the settle ran, how long the step took and, when `held_by` holds the step's replies,
    what the next command on the same client reads once they are let go."""

    async def run() -> tuple[bool, float, object]:
        also = await _settle_call(reserve=1000, actual=42)
        client = record_redis()
        after = None
        try:
            if held_by is not None:
                await client.set("gw:test:after", "fresh")  # the pool's connection, up
                held_by.hold_replies()
            started = time.monotonic()
            ran = await usage_record_write(
                client=client,
                record=record,
                timeout=settings.GATEWAY_USAGE_RECORD_TIMEOUT,
                note=(INFLIGHT_KEY, record.request_id),
                also=also,
            )
            elapsed = time.monotonic() - started
            if held_by is not None:
                held_by.release_replies()
                after = await client.get("gw:test:after")
            return ran, elapsed, after
        finally:
            await close_all()

    # Bounded here as well, so that a step that never ends fails the test instead of hanging it.
    return asyncio.run(asyncio.wait_for(run(), 10))


@pytest.mark.django_db(transaction=True)
def test_a_redis_that_accepts_and_never_answers_gets_the_event_stored_within_the_timeout(
    workspace: Workspace, settings: Settings
) -> None:
    settings.GATEWAY_USAGE_RECORD_TIMEOUT = 0.2
    record = _workspace_record(workspace, "req-step-3")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the backlog; nothing ever replies
        settings.REDIS_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"

        ran, elapsed, _ = _record_step(record)

    assert elapsed < 1.5  # the step and the note's removal, 0.2 s each, and the insert
    assert ran is False
    assert list(UsageEvent.objects.values_list("request_id", flat=True)) == ["req-step-3"]
    assert current_usage(DAILY) == 1000


@pytest.mark.django_db(transaction=True)
def test_a_late_reply_is_not_read_by_the_next_command(
    workspace: Workspace, settings: Settings
) -> None:
    settings.GATEWAY_USAGE_RECORD_TIMEOUT = 0.2
    record = _workspace_record(workspace, "req-step-4")
    redis.Redis.from_url(settings.REDIS_URL).hset(INFLIGHT_KEY, "req-step-4", "{}")
    with RedisRelay(settings.REDIS_URL) as relay:
        settings.REDIS_URL = relay.url

        ran, elapsed, after = _record_step(record, held_by=relay)

    assert elapsed < 1.5
    assert after == b"fresh"
    assert ran is False  # its reply never came: retried in the background
    assert list(UsageEvent.objects.values_list("request_id", flat=True)) == ["req-step-4"]


@pytest.fixture
def relay(settings: Settings) -> Iterator[RedisRelay]:
    """The gateway's way to Redis (REDIS_URL)."""
    with RedisRelay(settings.REDIS_URL) as relay:
        settings.REDIS_URL = relay.url
        yield relay


@pytest.fixture
def gateway(relay: RedisRelay, transactional_db: None) -> Iterator[GatewayThread]:
    """The gateway as a real server, started after the relay so that it uses it."""
    yield from gateway_serve()


@pytest.mark.parametrize("limited", [False, True], ids=["event-only", "event-and-settle"])
def test_a_response_whose_record_step_meets_a_silent_redis_ends_within_the_timeout(
    limited: bool,
    relay: RedisRelay,
    gateway: GatewayThread,
    workspace: Workspace,
    upstream: FakeModelServerThread,
    settings: Settings,
) -> None:
    settings.GATEWAY_USAGE_RECORD_TIMEOUT = 0.3
    limits = {"usage_limits": [{"type": "TOKEN", "unit": "DAY", "threshold": 100_000}]}
    tenant = tenant_build(
        workspace=workspace,
        targets=[compatible_target(upstream.url)],
        limits=limits if limited else None,
    )
    relay.blackhole_on(USAGE_STREAM.encode())  # the record step's connection goes silent

    started = time.monotonic()
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": SLUG, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {tenant.key}"},
        timeout=10,
    )
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed < 2  # the step's 0.3 s, the insert (and a note's removal, 0.3 s) at most
    stored = UsageEvent.objects.values_list("request_id", flat=True)
    assert list(stored) == [response.headers["x-request-id"]]
