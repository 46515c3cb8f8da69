"""GET /v1/gateway/events: window, holdback, filters, pinned cursor, order, auth."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from billing.models import UsageEvent
from groups.models import Group, Workspace
from groups.services.audit import SYSTEM_ACTOR
from keys.services import api_key_create, management_key_create

T0 = datetime(2026, 5, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def api(workspace: Workspace) -> Callable[..., Any]:
    """GET /v1/gateway/events with a VIEW management key of `workspace`."""
    _, plaintext = management_key_create(workspace=workspace, actor=SYSTEM_ACTOR, scope="VIEW")
    client = Client()

    def get(query: str = "", *, key: str | None = plaintext) -> Any:
        headers: dict[str, Any] = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
        return client.get(f"/v1/gateway/events?{query}", **headers)

    return get


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _keys(response: Any) -> list[str]:
    return [e["idempotencyKey"] for e in response.json()["items"]]


def test_it_returns_the_window_start_inclusive_end_exclusive_in_order(
    api: Callable[..., Any], make_event: Callable[..., UsageEvent]
) -> None:
    before = make_event(timestamp=T0 - timedelta(milliseconds=1))
    first = make_event(timestamp=T0)
    second = make_event(timestamp=T0 + timedelta(seconds=1))
    make_event(timestamp=T0 + timedelta(seconds=2))

    response = api(f"start_time={_iso(T0)}&end_time={_iso(T0 + timedelta(seconds=2))}")

    assert response.status_code == 200
    assert _keys(response) == [first.idempotency_key, second.idempotency_key]
    assert before.idempotency_key not in _keys(response)
    assert response.json()["pagination"] == {"has_more": False, "cursor": None}


def test_events_have_the_webhook_shape_without_request_metadata(
    api: Callable[..., Any], make_event: Callable[..., UsageEvent]
) -> None:
    event = make_event(timestamp=T0, cached_input_tokens=3)

    [item] = api(f"start_time={_iso(T0)}").json()["items"]

    assert item == {
        "idempotencyKey": event.idempotency_key,
        "timestamp": "2026-05-05T12:00:00.000Z",
        "requestId": event.request_id,
        "modelSlug": "acme/llama",
        "externalCustomerId": "cust_42",
        "externalEntityId": "cust_42",
        "apiKeyPrefix": "sky_abc123",
        "groupId": event.group_id,
        "status": "completed",
        "tokens": {"inputTokens": 100, "outputTokens": 200, "cachedInputTokens": 3},
    }


def test_the_default_end_holds_back_the_last_minute(
    api: Callable[..., Any], make_event: Callable[..., UsageEvent]
) -> None:
    now = timezone.now()
    settled = make_event(timestamp=now - timedelta(seconds=90))
    make_event(timestamp=now - timedelta(seconds=10))

    response = api(f"start_time={_iso(now - timedelta(hours=1))}")

    assert _keys(response) == [settled.idempotency_key]


def test_equal_timestamps_are_ordered_by_idempotency_key(
    api: Callable[..., Any], make_event: Callable[..., UsageEvent]
) -> None:
    events = [make_event(timestamp=T0) for _ in range(5)]

    response = api(f"start_time={_iso(T0)}")

    assert _keys(response) == sorted(e.idempotency_key for e in events)


def test_filters_take_comma_separated_or_repeated_values(
    api: Callable[..., Any], make_event: Callable[..., UsageEvent], workspace: Workspace
) -> None:
    other_group = Group.objects.create(workspace=workspace, external_entity_id="cust_7")
    a = make_event(timestamp=T0, api_key_prefix="sky_a")
    b = make_event(timestamp=T0, api_key_prefix="sky_b")
    make_event(timestamp=T0, api_key_prefix="sky_c")
    c7 = make_event(
        timestamp=T0, api_key_prefix="sky_d", group=other_group, external_entity_id="cust_7"
    )

    by_comma = api(f"start_time={_iso(T0)}&api_keys=sky_a,sky_b")
    by_repeat = api(f"start_time={_iso(T0)}&api_keys=sky_a&api_keys=sky_b")
    by_entity = api(f"start_time={_iso(T0)}&external_entity_ids=cust_7,nobody")

    assert set(_keys(by_comma)) == set(_keys(by_repeat)) == {a.idempotency_key, b.idempotency_key}
    assert _keys(by_entity) == [c7.idempotency_key]


def test_the_cursor_walks_every_event_once_and_pins_the_window(
    api: Callable[..., Any], make_event: Callable[..., UsageEvent]
) -> None:
    events = [
        make_event(timestamp=T0 + timedelta(seconds=i % 3), api_key_prefix="sky_a")
        for i in range(7)
    ]
    make_event(timestamp=T0, api_key_prefix="sky_other")
    end = T0 + timedelta(seconds=10)
    query = f"start_time={_iso(T0)}&end_time={_iso(end)}&api_keys=sky_a&limit=3"

    seen, pages, response = [], 0, api(query)
    while True:
        pages += 1
        seen += _keys(response)
        if pages == 1:
            make_event(
                timestamp=end + timedelta(seconds=1), api_key_prefix="sky_a"
            )  # outside the pin
            make_event(timestamp=T0 + timedelta(seconds=5), api_key_prefix="sky_a")
            events.append(UsageEvent.objects.latest("created_at"))
        cursor = response.json()["pagination"]["cursor"]
        if not cursor:
            break
        response = api(f"cursor={cursor}&limit=3")

    expected = sorted(events, key=lambda e: (e.timestamp, e.idempotency_key))
    assert seen == [e.idempotency_key for e in expected]
    assert pages == 3


def test_another_workspaces_events_are_invisible(
    api: Callable[..., Any], make_event: Callable[..., UsageEvent], other_workspace: Workspace
) -> None:
    other_group = Group.objects.create(workspace=other_workspace, external_entity_id="cust_42")
    make_event(timestamp=T0, workspace=other_workspace, group=other_group)

    response = api(f"start_time={_iso(T0)}")

    assert response.json()["items"] == []


def test_a_federated_key_is_forbidden(
    api: Callable[..., Any], group: Group, workspace: Workspace
) -> None:
    _, federated = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)

    response = api(f"start_time={_iso(T0)}", key=federated)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "federated_key_not_allowed"


def test_a_missing_or_unknown_key_is_401(api: Callable[..., Any]) -> None:
    assert api(f"start_time={_iso(T0)}", key=None).status_code == 401
    assert api(f"start_time={_iso(T0)}", key="gwm_nope.nope").status_code == 401


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", "missing_start_time"),
        ("start_time=yesterday", "invalid_time"),
        (f"start_time={_iso(T0)}&end_time=soon", "invalid_time"),
        (f"start_time={_iso(T0)}&end_time={_iso(T0 - timedelta(seconds=1))}", "invalid_time_range"),
        (f"start_time={_iso(T0)}&limit=0", "invalid_limit"),
        (f"start_time={_iso(T0)}&limit=1001", "invalid_limit"),
        ("cursor=garbage", "invalid_cursor"),
        (f"start_time={_iso(T0)}&colour=blue", "unknown_field"),
    ],
)
def test_bad_queries_are_400_with_a_code(api: Callable[..., Any], query: str, code: str) -> None:
    response = api(query)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


def test_writes_are_405(workspace: Workspace) -> None:
    _, plaintext = management_key_create(workspace=workspace, actor=SYSTEM_ACTOR)

    response = Client().post(
        "/v1/gateway/events",
        {},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {plaintext}",
    )

    assert response.status_code == 405


def test_the_query_count_does_not_grow_with_the_page(
    api: Callable[..., Any], make_event: Callable[..., UsageEvent]
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(30):
        make_event(timestamp=T0)
    api(f"start_time={_iso(T0)}&limit=1")  # the key's last_used_at is written once a minute

    with CaptureQueriesContext(connection) as small:
        api(f"start_time={_iso(T0)}&limit=1")
    with CaptureQueriesContext(connection) as large:
        api(f"start_time={_iso(T0)}&limit=30")

    assert len(small) == len(large) <= 3
