"""SIGKILL one gunicorn worker while 200 streams are in flight."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import psutil
import pytest

from tests.faults.ledger import accounting_check, events_read, tenant_db
from tests.faults.processes import Gateway
from tests.faults.traffic import (
    Outcome,
    burst,
    call,
    chat_body,
    new_session,
    summary,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
STREAMS = 200
TOKENS, DELAY_MS = 60, 50  # each stream lasts about three seconds
# Heartbeat TTL (10 s) + missing grace (5 s) + two reaper periods (5 s each), with room to spare.
REAP_TIMEOUT = 60.0


async def _streams_with_a_kill(
    gateway: Gateway, key: str, body: bytes
) -> tuple[int, dict[int, int], list[Outcome]]:
    """Start the streams, SIGKILL the busiest worker once every stream has its head."""
    heads = asyncio.Event()
    seen: list[Outcome] = []

    def on_head(outcome: Outcome) -> None:
        seen.append(outcome)
        if len(seen) == STREAMS:
            heads.set()

    async with new_session() as session:
        tasks = []
        for _ in range(STREAMS):
            request = call(session, base=gateway.url, key=key, body=body, on_head=on_head)
            tasks.append(asyncio.create_task(request))
        async with asyncio.timeout(30):
            await heads.wait()
        held = {worker.pid: gateway.streams_held(worker) for worker in gateway.workers()}
        victim = max(held, key=held.__getitem__)
        os.kill(victim, signal.SIGKILL)
        return victim, held, list(await asyncio.gather(*tasks))


def _respawned(gateway: Gateway, victim: int) -> bool:
    pids = {worker.pid for worker in gateway.workers() if worker.status() != psutil.STATUS_ZOMBIE}
    return len(pids) == 2 and victim not in pids


def test_a_killed_gateway_worker_fails_only_its_own_streams(stack):
    tenant, gateway = stack.tenant, stack.gateway
    body = chat_body(slug=tenant["slug"], tokens=TOKENS, delay_ms=DELAY_MS)

    victim, held, outcomes = asyncio.run(_streams_with_a_kill(gateway, tenant["key"], body))
    wait_until(lambda: _respawned(gateway, victim), timeout=30, what="gunicorn respawns a worker")
    after = asyncio.run(burst(base=gateway.url, key=tenant["key"], bodies=[body] * 20))

    killed = held[victim]
    others = sum(held.values()) - killed
    broken = [o for o in outcomes if not o.complete]
    print(
        f"\n[worker kill] injected: SIGKILL gateway worker {victim} holding {killed} of {STREAMS}"
        f" streams (the other worker held {others}); counted: {summary(outcomes)};"
        f" after the respawn: {summary(after)}"
    )
    assert others > 0, f"every stream was on one worker ({held}): nothing shows the others survive"
    assert len(broken) == killed, f"{len(broken)} streams failed, the killed worker held {killed}"
    assert all(o.status == 200 and o.error for o in broken), summary(broken)
    assert all(o.complete for o in after), f"after the respawn: {summary(after)}"
    respawned_at = time.monotonic()
    everything = {o.request_id for o in outcomes + after if o.request_id}
    wait_until(
        lambda: everything <= {e.request_id for e in events_read(**tenant_db(stack))},
        timeout=REAP_TIMEOUT,
        what="an event for every stream, the killed worker's included",
    )
    reaped_after = time.monotonic() - respawned_at
    accounting = accounting_check(stack=stack, outcomes=outcomes + after)
    print(
        f"[worker kill] counted: {accounting.line()}; the {killed} killed streams became"
        f" cancelled events (estimated tokens, reservations settled) {reaped_after:.1f}s after"
        " the respawn (the dead worker's heartbeat expired, the reaper ran)"
    )
    assert accounting.events == STREAMS + len(after), accounting.line()
    assert accounting.cancelled == killed, accounting.line()
