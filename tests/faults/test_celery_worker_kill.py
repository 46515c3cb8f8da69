"""SIGKILL the Celery worker (main and pool processes) while webhook deliveries are in flight."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest

from tests.faults.ledger import accounting_check
from tests.faults.traffic import burst, chat_body, summary
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
REQUESTS = 300
RECEIVER_DELAY = 0.8  # below the 1.5 s webhook timeout: every attempt that is not killed succeeds


def _accepted(receiver, webhook_id: str) -> bool:
    return any(d.webhook_id == webhook_id and d.status == 200 for d in list(receiver.deliveries))


def test_a_killed_celery_worker_redelivers_with_the_same_webhook_id(stack):
    tenant, receiver = stack.tenant, stack.receiver
    receiver.delay = RECEIVER_DELAY
    body = chat_body(slug=tenant["slug"], tokens=5, stream=False)
    outcomes = []
    for _ in range(REQUESTS // 50):
        outcomes += asyncio.run(
            burst(base=stack.gateway.url, key=tenant["key"], bodies=[body] * 50)
        )

    wait_until(lambda: receiver.in_flight, timeout=30, interval=0.01, what="a delivery in flight")
    stack.worker.kill()
    killed_at = time.monotonic()
    interrupted = list(receiver.in_flight)  # the receiver is still taking its time with these
    stack.worker.start()
    wait_until(
        lambda: all(_accepted(receiver, i) for i in interrupted),
        timeout=60,
        interval=0.1,
        what=f"the interrupted deliveries {interrupted} sent again",
    )
    resent_in = time.monotonic() - killed_at
    accounting = accounting_check(stack=stack, outcomes=outcomes)

    posts = defaultdict(list)
    for delivery in receiver.deliveries:
        posts[delivery.webhook_id].append(delivery)
    redelivered = {i: [d.status for d in posts[i]] for i in interrupted}
    same_bytes = all(
        {d.body for d in posts[i]} == {receiver.interrupted[i]} for i in receiver.interrupted
    )
    batches_per_event = defaultdict(set)
    for webhook_id, deliveries in posts.items():
        for event in deliveries[0].events():
            batches_per_event[event["idempotencyKey"]].add(webhook_id)
    print(
        f"\n[celery kill] injected: SIGKILL of the Celery worker's process group while"
        f" {len(interrupted)} deliveries were in flight ({interrupted}); counted: requests"
        f" {summary(outcomes)}, {len(receiver.arrivals)} POSTs for {len(posts)} webhook ids,"
        f" senders lost mid-POST {len(receiver.interrupted)}, statuses of the interrupted ids'"
        f" later POSTs {redelivered} (sent again {resent_in:.1f}s after the kill, same bytes:"
        f" {same_bytes}); {accounting.line()}"
    )
    assert all(o.complete for o in outcomes), summary(outcomes)
    assert set(receiver.interrupted) == set(interrupted), receiver.interrupted
    assert all(200 in statuses for statuses in redelivered.values()), redelivered
    assert same_bytes, "a resend changed the signed bytes"
    assert all(len(ids) == 1 for ids in batches_per_event.values()), "an event in two batches"
    assert accounting.events == REQUESTS and accounting.delivered == REQUESTS, accounting.line()
