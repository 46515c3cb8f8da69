"""The record step's one round trip: the usage event, the end of the in-flight note and the settle
of the reservation go to Redis together, and neither a flushed script cache nor a Redis that does
not answer loses the event or the settle."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest
import redis
from django.conf import settings

from billing.models import UsageEvent
from billing.services.usage import (
    USAGE_STREAM,
    ScriptCall,
    UsageRecord,
    usage_event_key,
    usage_record_write,
)
from groups.limits import EnforcedLimit
from groups.models import Group
from routing.admission import limits_admit, settle_changes
from routing.journal import INFLIGHT_KEY
from routing.limit_counters import SCRIPT, SCRIPT_SHA, script_adjust_call
from tests.proxy.conftest import SLUG
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
            return await usage_record_write(client=client, record=record, note=note, also=also)
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
