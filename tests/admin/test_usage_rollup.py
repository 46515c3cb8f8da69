"""The usage dashboard reads a rollup plus the newest events: its numbers must equal a direct
aggregation of the events at every moment, however the rollup's advances and the events' arrival
interleave, and replays or repeated advances must never count an event twice."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from billing.models import UsageEvent, UsageRollup
from billing.selectors import UsageBucket, rollup_through, usage_by_slug
from billing.services.rollup import SETTLE, usage_rollup_advance
from billing.services.usage_store import usage_events_store
from groups.models import Group, Workspace

_numbers = itertools.count(1)
DASHBOARD = "/admin/billing/usageevent/dashboard/"


def _event(group: Group, *, at: datetime, created: datetime | None = None, **fields: Any) -> None:
    number = next(_numbers)
    values: dict[str, Any] = {
        "request_id": f"req-rollup-{number}",
        "timestamp": at,
        "workspace_id": group.workspace_id,
        "group": group,
        "external_entity_id": group.external_entity_id,
        "api_key_prefix": "sky_rollup",
        "model_slug": "acme/llama",
        "status": "completed",
        "input_tokens": 10 * number,
        "output_tokens": number,
        **fields,
    }
    event = UsageEvent.objects.create(**values)
    if created is not None:  # stored that long ago
        UsageEvent.objects.filter(pk=event.pk).update(created_at=created)


def _direct(
    *, workspace: Workspace, group_id: str, until: datetime, buckets: int, unit: str
) -> dict[str, list[UsageBucket]]:
    """The dashboard's numbers summed from the events themselves, in Python."""
    step = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
    last = until.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if unit == "day":
        last = last.replace(hour=0)
    first = last - step * (buckets - 1)
    sums: dict[tuple[str, datetime], dict[str, Any]] = {}
    events = UsageEvent.objects.filter(workspace=workspace)
    if group_id:
        events = events.filter(group_id=group_id)
    for event in events:
        at = event.timestamp.astimezone(UTC)
        if not first <= at < last + step:
            continue
        start = first + step * int((at - first) / step)
        row = sums.setdefault(
            (event.model_slug, start), {"requests": 0, "tokens": 0, "spend": None, "currency": ""}
        )
        row["requests"] += 1
        row["tokens"] += event.input_tokens + event.output_tokens
        if event.cost_amount is not None:
            row["spend"] = (row["spend"] or Decimal(0)) + event.cost_amount
        row["currency"] = max(row["currency"], event.cost_currency)
    starts = [first + step * i for i in range(buckets)]
    return {
        slug: [
            UsageBucket(
                start=start,
                requests=sums[(slug, start)]["requests"],
                tokens=sums[(slug, start)]["tokens"],
                spend=sums[(slug, start)]["spend"] or Decimal(0),
                currency=sums[(slug, start)]["currency"],
            )
            if (slug, start) in sums
            else UsageBucket(start=start, requests=0, tokens=0)
            for start in starts
        ]
        for slug in sorted({slug for slug, _ in sums})
    }


def _assert_exact(workspace: Workspace, groups: list[Group]) -> None:
    now = timezone.now()
    for group_id in ["", *(group.pk for group in groups)]:
        for buckets, unit in ((24, "hour"), (30, "day")):
            shown = usage_by_slug(
                workspace=workspace, group_id=group_id, until=now, buckets=buckets, unit=unit
            )
            expected = _direct(
                workspace=workspace, group_id=group_id, until=now, buckets=buckets, unit=unit
            )
            assert shown == expected, (group_id, unit)


@pytest.fixture
def customers(workspace: Workspace, other_workspace: Workspace) -> list[Group]:
    groups = [
        Group.objects.create(workspace=workspace, external_entity_id=f"cust-{n}", name=f"C{n}")
        for n in range(2)
    ]
    stranger = Group.objects.create(workspace=other_workspace, external_entity_id="x", name="X")
    now = timezone.now()
    _event(stranger, at=now - timedelta(minutes=2), created=now - timedelta(minutes=10))
    return groups


def test_the_dashboard_equals_the_events_before_between_and_after_advances(
    workspace: Workspace, customers: list[Group]
) -> None:
    now = timezone.now()
    a, b = customers
    earlier = now - timedelta(minutes=10)
    priced: dict[str, Any] = {"cost_currency": "USD", "model_slug": "acme/priced"}
    for group, at in itertools.product(customers, (5, 70, 60 * 26, 60 * 24 * 3, 60 * 24 * 40)):
        _event(group, at=now - timedelta(minutes=at), created=earlier)
    _event(
        a, at=now - timedelta(hours=2), created=earlier, cost_amount=Decimal("0.000125"), **priced
    )
    _event(b, at=now - timedelta(days=2), created=earlier, cost_amount=Decimal("1.5"), **priced)
    _event(b, at=now - timedelta(days=2), created=earlier, **priced)  # priced, no cost known
    _assert_exact(workspace, customers)  # nothing rolled up yet: all of it is the tail

    assert usage_rollup_advance() == 14
    assert rollup_through() >= earlier
    assert UsageRollup.objects.filter(workspace=workspace, group_id="").exists()
    _assert_exact(workspace, customers)

    # After the advance: a fresh event, a late one for a day the rollup already holds, and a
    # replay of a stored event (a reclaimed stream entry), which stores nothing.
    _event(a, at=timezone.now(), model_slug="acme/fresh")
    _event(b, at=now - timedelta(days=3), cost_amount=Decimal("2"), **priced)
    stored = UsageEvent.objects.filter(group=a).first()
    assert stored is not None
    replay = {
        "idempotencyKey": stored.idempotency_key,
        "timestamp": stored.timestamp.isoformat(),
        "requestId": stored.request_id,
        "modelSlug": stored.model_slug,
        "externalEntityId": a.external_entity_id,
        "apiKeyPrefix": "sky_rollup",
        "groupId": a.pk,
        "workspaceId": a.workspace_id,
        "status": "completed",
        "tokens": {"inputTokens": 999, "outputTokens": 999},
    }
    usage_events_store(events=[replay])
    _assert_exact(workspace, customers)

    # Nothing new has settled yet: advancing again counts nothing.
    assert usage_rollup_advance() == 0
    _assert_exact(workspace, customers)
    # Once they have settled, they move into the rollup, once, however often it advances.
    later = timezone.now() + SETTLE + timedelta(seconds=1)
    assert usage_rollup_advance(now=later) == 2
    assert usage_rollup_advance(now=later) == 0
    _assert_exact(workspace, customers)


def test_the_watermark_stays_behind_a_transaction_still_writing(
    workspace: Workspace, customers: list[Group]
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    import psycopg

    other = psycopg.connect(**connection.get_connection_params())
    try:
        other.execute("SELECT txid_current()")  # a transaction that has written
        started = other.execute(
            "SELECT xact_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        )
        row = started.fetchone()
        assert row is not None
        # Even when that transaction has been open for a while, its rows (stamped when it
        # started) must land ahead of the watermark.
        usage_rollup_advance(now=timezone.now() + timedelta(minutes=10))
        assert rollup_through() <= row[0] - SETTLE
    finally:
        other.rollback()
        other.close()


def test_the_dashboard_page_shows_what_the_events_hold(
    admin_client: Client, workspace: Workspace, customers: list[Group]
) -> None:
    now = timezone.now()
    a, _ = customers
    _event(a, at=now - timedelta(hours=3), created=now - timedelta(minutes=10), input_tokens=7000)
    usage_rollup_advance()
    _event(a, at=now - timedelta(hours=3), input_tokens=500, output_tokens=0)

    response = admin_client.get(DASHBOARD, {"workspace": workspace.pk, "group": a.pk})

    assert response.status_code == 200
    charts = dict(response.context["charts"])
    tokens = [chart for chart in charts["acme/llama"] if chart.title == "Tokens, last 24 h"]
    assert tokens[0].total == sum(
        e.input_tokens + e.output_tokens for e in UsageEvent.objects.filter(group=a)
    )
