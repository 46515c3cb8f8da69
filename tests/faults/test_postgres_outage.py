"""Stop PostgreSQL for 10 s under steady streaming load, with every key already cached."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import redis

from billing.services.usage import USAGE_STREAM
from tests.faults.ledger import accounting_check
from tests.faults.traffic import Load, Outcome, burst, chat_body, summary
from tests.metrics_read import requests_by_worker
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
CONCURRENCY = 10
OUTAGE_SECONDS = 10.0


def _workers_served(stack) -> int:
    """Live workers whose metric files count a 200 (each worker has filled its caches)."""
    counts = requests_by_worker(stack.gateway.metrics_dir, status="200")
    return sum(1 for worker in stack.gateway.workers() if counts.get(worker.pid))


def _both_workers_warm(stack, body: bytes, outcomes: list[Outcome]) -> bool:
    """Send a few requests; True once both workers have served one (their caches are full)."""
    bodies = [body] * 4
    outcomes += asyncio.run(burst(base=stack.gateway.url, key=stack.tenant["key"], bodies=bodies))
    return _workers_served(stack) == 2


def _stream_depth(redis_url: str) -> int:
    return int(redis.Redis.from_url(redis_url).xlen(USAGE_STREAM))


def _uncached_key_status(stack) -> str:
    """What a key the workers never saw gets while the database is down."""
    headers = {"Authorization": "Bearer sky_NeverSeen0000.NotARealSecretButLongEnough0000000000"}
    url = f"{stack.gateway.url}/v1/chat/completions"
    body = {"model": stack.tenant["slug"], "messages": []}
    try:
        response = httpx.post(url, headers=headers, json=body, timeout=30)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    code = response.json().get("error", {}).get("code") if response.content else None
    return f"{response.status_code} {code}"


def _management_status(stack) -> int:
    url = f"{stack.gateway.url}/v1/gateway/groups/{stack.tenant['group_id']}/usage"
    headers = {"Authorization": f"Bearer {stack.tenant['management_key']}"}
    return httpx.get(url, headers=headers, timeout=10).status_code


def test_inference_keeps_working_from_caches_while_postgres_is_down(stack):
    body = chat_body(slug=stack.tenant["slug"], tokens=5, delay_ms=20)
    warm: list[Outcome] = []
    wait_until(lambda: _both_workers_warm(stack, body, warm), timeout=30, what="both workers warm")
    load = Load(base=stack.gateway.url, key=stack.tenant["key"], body=body, concurrency=CONCURRENCY)
    load.start()
    wait_until(lambda: load.count(lambda o: o.complete) >= 50, timeout=30, what="warm load")

    pids = stack.pids()
    stopped_at = time.monotonic()
    stack.postgres.stop()
    depths: list[int] = []
    while time.monotonic() < stopped_at + OUTAGE_SECONDS:  # the outage itself, not a wait
        depths.append(_stream_depth(stack.redis.url))
        time.sleep(0.5)
    uncached = _uncached_key_status(stack)
    stack.postgres.start()
    restarted_at = time.monotonic()
    wait_until(
        lambda: load.count(lambda o: o.complete, since=restarted_at) >= 50,
        timeout=30,
        what="load after the restart",
    )
    outcomes = warm + load.stop()
    pids_after = stack.pids()

    during = [o for o in outcomes if stopped_at <= o.started < restarted_at]
    print(
        f"\n[postgres outage] injected: pg_ctl stop -m fast for {restarted_at - stopped_at:.1f}s"
        f" under {CONCURRENCY} concurrent streams (keys and routes cached on both workers);"
        f" counted: while down {summary(during)}, all {summary(outcomes)}; usage stream depth"
        f" while down {depths[0]} -> {max(depths)}; processes before/after {pids} / {pids_after};"
        f" a key no worker had cached, while down: {uncached}"
    )
    assert all(o.complete for o in outcomes), summary(outcomes)
    assert uncached == "503 service_unavailable", uncached
    assert len(during) >= 100, f"only {len(during)} requests while PostgreSQL was down"
    assert max(depths) >= len(during) // 2, f"events did not wait in the stream: {depths}"
    assert pids == pids_after, f"a process died: {pids} / {pids_after}"
    accounting = accounting_check(stack=stack, outcomes=outcomes)
    print(
        f"[postgres outage] counted: every event ingested and delivered"
        f" {time.monotonic() - restarted_at:.1f}s after PostgreSQL returned; {accounting.line()}"
    )


def test_management_api_answers_after_postgres_restarts(stack):
    before = [_management_status(stack) for _ in range(5)]

    stack.postgres.stop()
    stack.postgres.start()
    after = [_management_status(stack) for _ in range(5)]

    print(
        f"\n[postgres restart] injected: pg_ctl stop -m fast then start, no load; counted:"
        f" management API statuses before {before}, right after the restart {after}"
    )
    assert before == [200] * 5
    assert after == [200] * 5, (
        f"statuses after the restart {after}: pooled connections PostgreSQL terminated are handed"
        " out unchecked (OperationalError: terminating connection due to administrator command)"
    )
