"""What the stack recorded, read back and checked against what the clients saw.

After every fault: each request whose client got a complete response has exactly one usage event
(X-Request-ID = requestId), every event reached the webhook receiver (by idempotencyKey), and the
group's REQUEST/DAY and TOKEN/DAY counters hold exactly what the events account for, plus what the
test says was charged for requests that could not record one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from aiohttp import web

from tests.fakes.webhook_receiver import WebhookReceiver
from tests.faults.traffic import Outcome
from tests.waiting import wait_until

SETTLE_TIMEOUT = 20.0
PIPELINE_TIMEOUT = 75.0  # ingest reclaims entries a failed consumer left pending after 30 s


@dataclass
class SlowReceiver(WebhookReceiver):
    """The fake receiver, answering each POST after `delay` seconds and noting senders that left."""

    delay: float = 0.0
    arrivals: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)
    interrupted: dict[str, bytes] = field(default_factory=dict)  # webhook-id -> body bytes

    async def handle(self, request: web.Request) -> web.Response:
        """Record the arrival, take `delay`, then verify and record as the plain receiver does."""
        webhook_id = request.headers.get("webhook-id", "")
        body = await request.read()
        with self._lock:
            self.arrivals.append(webhook_id)
            self.in_flight.append(webhook_id)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)  # a slow billing backend, not a wait
            if request.transport is None or request.transport.is_closing():
                with self._lock:
                    self.interrupted[webhook_id] = body
                return web.Response(status=499)  # the sender is gone: nobody reads this
            return await super().handle(request)
        finally:
            with self._lock:
                self.in_flight.remove(webhook_id)


@dataclass(frozen=True)
class EventRow:
    """One stored usage event."""

    request_id: str
    idempotency_key: str
    status: str
    tokens: int


def events_read(*, database_url: str, workspace_id: str) -> list[EventRow]:
    """The workspace's usage events, straight from the private database."""
    sql = (
        "SELECT request_id, idempotency_key, status, input_tokens + output_tokens"
        " FROM billing_usageevent WHERE workspace_id = %s"
    )
    with psycopg.connect(database_url, connect_timeout=3) as conn:
        return [EventRow(*row) for row in conn.execute(sql, (workspace_id,)).fetchall()]


def usage_read(*, base: str, tenant: dict[str, str]) -> tuple[int, dict[str, int]]:
    """(status, today's REQUEST/DAY and TOKEN/DAY usage of the group) from the management API."""
    response = httpx.get(
        f"{base}/v1/gateway/groups/{tenant['group_id']}/usage",
        headers={"Authorization": f"Bearer {tenant['management_key']}"},
        timeout=10,
    )
    if response.status_code != 200:
        return response.status_code, {}
    rows = response.json()["usage"][tenant["slug"]]
    return 200, {row["type"]: row["current_usage"] or 0 for row in rows}


@dataclass
class Accounting:
    """What a fault test counted after the fault."""

    complete: int
    events: int
    cancelled: int
    delivered: int
    request_counter: int
    token_counter: int
    token_events: int

    def line(self) -> str:
        """One line for the test output."""
        return (
            f"complete responses {self.complete}, usage events {self.events} "
            f"({self.cancelled} cancelled), delivered to the receiver {self.delivered}, "
            f"REQUEST/DAY counter {self.request_counter}, TOKEN/DAY counter {self.token_counter} "
            f"(events' tokens {self.token_events})"
        )


def _events_settled(
    *, database_url: str, workspace_id: str, complete: set[str]
) -> list[EventRow] | None:
    try:
        events = events_read(database_url=database_url, workspace_id=workspace_id)
    except psycopg.OperationalError:
        return None
    return events if complete <= {e.request_id for e in events} else None


def tenant_db(stack: Any) -> dict[str, str]:
    return {"database_url": stack.database_url, "workspace_id": stack.tenant["workspace_id"]}


def accounting_check(
    *,
    stack: Any,
    outcomes: list[Outcome],
    charged_without_event: int = 0,
    tokens_without_event: int = 0,
    check_tokens: bool = True,
) -> Accounting:
    """Assert the three invariants (see the module docstring); returns the counts."""
    tenant = stack.tenant
    complete = {o.request_id for o in outcomes if o.complete and o.request_id}
    answered = {o.request_id for o in outcomes if o.status == 200 and o.request_id}
    try:
        events = wait_until(
            lambda: _events_settled(complete=complete, **tenant_db(stack)),
            timeout=PIPELINE_TIMEOUT,
            interval=0.25,
        )
    except AssertionError:
        stored = {e.request_id for e in events_read(**tenant_db(stack))}
        missing = len(complete - stored)
        raise AssertionError(
            f"{missing} of {len(complete)} complete responses have no usage event"
            f" after {PIPELINE_TIMEOUT}s ({len(stored)} events stored)"
        ) from None
    by_request = {e.request_id: e for e in events}
    assert len(by_request) == len(events), "two events share a requestId"
    strays = {e.request_id for e in events} - answered
    assert not strays, f"{len(strays)} events for requests whose client got no 200"
    wrong = [r for r in complete if by_request[r].status != "completed"]
    assert not wrong, f"{len(wrong)} complete responses recorded as {by_request[wrong[0]].status}"
    keys = {e.idempotency_key for e in events}
    receiver = stack.receiver
    try:
        wait_until(lambda: keys <= set(receiver.events()), timeout=PIPELINE_TIMEOUT, interval=0.25)
    except AssertionError:
        missing = len(keys - set(receiver.events()))
        raise AssertionError(
            f"{missing} of {len(keys)} events never reached the receiver in {PIPELINE_TIMEOUT}s"
        ) from None
    extra = set(receiver.events()) - keys
    assert not extra, f"receiver got {len(extra)} events that are not in the database"
    token_events = sum(e.tokens for e in events)
    expected = {
        "REQUEST": len(events) + charged_without_event,
        "TOKEN": token_events + tokens_without_event,
    }
    if not check_tokens:
        expected.pop("TOKEN")
    usage: dict[str, int] = {}
    failures: list[int] = []  # test_management_api_answers_after_postgres_restarts pins these

    def counters_match() -> bool:
        status, read = usage_read(base=stack.gateway.url, tenant=tenant)
        failures.extend([status] if status != 200 else [])
        usage.update(read)
        return bool(usage) and all(usage[kind] == value for kind, value in expected.items())

    try:
        wait_until(counters_match, timeout=SETTLE_TIMEOUT, interval=0.25, what="counters")
    except AssertionError:
        raise AssertionError(
            f"counters {usage} != expected {expected} (usage API failures: {failures})"
        ) from None
    return Accounting(
        complete=len(complete),
        events=len(events),
        cancelled=sum(1 for e in events if e.status == "cancelled"),
        delivered=len(keys & set(receiver.events())),
        request_counter=usage["REQUEST"],
        token_counter=usage["TOKEN"],
        token_events=token_events,
    )


class ReceiverThread:
    """A SlowReceiver on its own loop in a daemon thread."""

    def __init__(self) -> None:
        from tests.fakes.webhook_receiver import WebhookReceiverThread

        self._thread = WebhookReceiverThread()
        self._thread.receiver = self.receiver = SlowReceiver()

    @property
    def url(self) -> str:
        """Where to deliver."""
        return self._thread.url

    def __enter__(self) -> ReceiverThread:
        self._thread.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.__exit__(*exc)
