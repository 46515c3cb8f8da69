"""A usage backlog past the high-water mark: recording goes on, a metric and a log say so."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings
from django.db import OperationalError, connection, connections
from django_redis import get_redis_connection

from billing.models import UsageEvent
from billing.services.ingest import usage_ingest
from billing.services.usage import USAGE_STREAM, usage_event_record
from billing.services.usage_store import usage_rows_ready
from billing.tasks import usage_ingest_task
from gateway_project.worker_metrics import metrics_app
from groups.models import Group
from tests.faults.processes import free_port
from tests.metrics_read import sample_sum


def _event(group: Group, number: int) -> dict[str, Any]:
    return {
        "idempotencyKey": f"01J9X7Y0Z3K4M5N6P7Q8{number:06d}",
        "timestamp": "2026-05-05T12:00:00.123Z",
        "requestId": f"req-{number:06d}",
        "requestMetadata": {},
        "modelSlug": "acme/llama",
        "externalEntityId": "cust_42",
        "apiKeyPrefix": "sky_sCqhBwEy4kPd",
        "groupId": group.id,
        "status": "completed",
        "tokens": {"inputTokens": 10, "outputTokens": 20, "cachedInputTokens": 0},
        "workspaceId": group.workspace_id,
    }


def _record(group: Group, numbers: range) -> None:
    async def run() -> None:
        client = redis.asyncio.Redis.from_url(django_settings.REDIS_URL)
        for number in numbers:
            await usage_event_record(client=client, event=_event(group, number))
        await client.aclose()

    asyncio.run(run())


def _metrics() -> str:
    environ = {"PATH_INFO": "/metrics", "REMOTE_ADDR": "127.0.0.1"}
    return b"".join(metrics_app(environ, lambda status, headers: None)).decode()


@pytest.fixture
def low_mark(settings: Any) -> int:
    settings.GATEWAY_USAGE_STREAM_HIGH_WATER = 5
    settings.GATEWAY_METRICS_TOKEN = ""
    return 5


def test_past_the_high_water_mark_every_event_is_kept_and_the_metric_says_so(
    group: Group, low_mark: int
) -> None:
    _record(group, range(1, 9))

    text = _metrics()

    assert sample_sum(text, "gateway_usage_queue_depth") == 8
    assert sample_sum(text, "gateway_usage_queue_high_water") == low_mark
    assert sample_sum(text, "gateway_usage_queue_over_high_water") == 1
    assert get_redis_connection("default").xlen(USAGE_STREAM) == 8


def test_once_drained_the_backlog_metric_falls_and_nothing_was_lost(
    group: Group, low_mark: int
) -> None:
    _record(group, range(1, 9))

    usage_ingest()

    assert sample_sum(_metrics(), "gateway_usage_queue_over_high_water") == 0
    assert UsageEvent.objects.count() == 8


def test_the_ingest_task_logs_a_backlog_once_a_minute(
    group: Group, low_mark: int, caplog: pytest.LogCaptureFixture
) -> None:
    _record(group, range(1, 9))

    with caplog.at_level(logging.WARNING, logger="billing.backlog"):
        usage_ingest_task()
        _record(group, range(9, 17))
        usage_ingest_task()

    lines = [r.getMessage() for r in caplog.records if r.name == "billing.backlog"]
    assert len(lines) == 1 and "8 events waiting (mark 5)" in lines[0]
    assert UsageEvent.objects.count() == 16


def test_a_stream_at_the_mark_is_not_reported(
    group: Group, low_mark: int, caplog: pytest.LogCaptureFixture
) -> None:
    _record(group, range(1, 6))

    with caplog.at_level(logging.WARNING, logger="billing.backlog"):
        usage_ingest_task()

    assert not [r for r in caplog.records if r.name == "billing.backlog"]
    assert sample_sum(_metrics(), "gateway_usage_queue_over_high_water") == 0


@contextmanager
def _postgres_unreachable() -> Iterator[None]:
    """The default database pointed at a port nothing listens on, then back. The pool gives up
    after 0.5 s rather than its configured seconds: how long a refusal takes is not under test."""
    connection: Any = connections["default"]  # PostgreSQL's wrapper, which has a pool
    port, pool = connection.settings_dict["PORT"], connection.settings_dict["OPTIONS"].get("pool")
    connection.close()
    connection.close_pool()
    connection.settings_dict["PORT"] = str(free_port())
    if isinstance(pool, dict):
        connection.settings_dict["OPTIONS"]["pool"] = {**pool, "timeout": 0.5}
    try:
        yield
    finally:
        connection.close()
        connection.close_pool()
        connection.settings_dict["PORT"] = port
        if isinstance(pool, dict):
            connection.settings_dict["OPTIONS"]["pool"] = pool


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL outage")
def test_a_batch_refused_in_an_outage_is_stored_by_the_next_run_without_waiting_for_reclaim(
    transactional_db: None, group: Group
) -> None:
    _record(group, range(1, 6))
    usage_rows_ready()  # a worker that has stored batches before: its statements are built
    with _postgres_unreachable(), pytest.raises(OperationalError):
        usage_ingest()
    assert get_redis_connection("default").xpending(USAGE_STREAM, "ingest")["pending"] == 5

    stored = usage_ingest()

    assert stored == 5 and UsageEvent.objects.count() == 5
    assert get_redis_connection("default").xlen(USAGE_STREAM) == 0
