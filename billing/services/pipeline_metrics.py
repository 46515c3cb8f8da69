"""The billing pipeline's Prometheus numbers, read from Redis at each scrape.

They are the same for the whole deployment, so every gateway node's `/metrics` and every Celery
worker's metrics port report the same values: aggregate them with max(), not sum().
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from billing.services.usage import (
    BILLING_METRICS_KEY,
    DEAD_LETTERS_METRIC,
    QUARANTINED_DELIVERIES_METRIC,
    QUARANTINED_EVENTS_METRIC,
    USAGE_STREAM,
    WEBHOOK_DELIVERIES_METRIC,
)

# Outcomes counted by gateway_webhook_deliveries_total.
DELIVERY_OUTCOMES = ("succeeded", "failed")
# At most one backlog log line a minute for the whole deployment (a Redis key with a TTL).
BACKLOG_LOGGED_KEY = "gw:billing:backlog-logged"
BACKLOG_LOG_SECONDS = 60
logger = logging.getLogger("billing.backlog")


@dataclass(frozen=True)
class PipelineNumbers:
    """One reading of the pipeline: queue depth, the oldest queued event's age, the counters."""

    depth: int
    oldest_ms: int | None
    values: dict[str, float]


def pipeline_commands(pipe: Any) -> None:
    """Queue the reads on a Redis pipeline (sync or asyncio: the calls are the same)."""
    pipe.xlen(USAGE_STREAM)
    pipe.xrange(USAGE_STREAM, "-", "+", count=1)
    pipe.hgetall(BILLING_METRICS_KEY)


def pipeline_numbers(replies: list[Any]) -> PipelineNumbers:
    """The numbers from the replies of `pipeline_commands`."""
    depth, oldest, billing = replies
    oldest_ms = None
    if oldest:
        entry_id = oldest[0][0]
        entry_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        oldest_ms = int(entry_id.split("-", 1)[0])
    values = {_text(k): _number(v) for k, v in billing.items()}
    return PipelineNumbers(depth=int(depth), oldest_ms=oldest_ms, values=values)


def high_water() -> int:
    """The stream length past which the usage backlog is reported."""
    return int(settings.GATEWAY_USAGE_STREAM_HIGH_WATER)


def usage_backlog_check(*, client: Any) -> PipelineNumbers:
    """Read the pipeline; past the high-water mark, log it (once a minute for the deployment).

    Recording never waits on this: the stream is not trimmed, so a backlog costs Redis memory,
    never an event."""
    pipe = client.pipeline(transaction=False)
    pipeline_commands(pipe)
    numbers = pipeline_numbers(pipe.execute())
    mark = high_water()
    if numbers.depth > mark and client.set(BACKLOG_LOGGED_KEY, 1, nx=True, ex=BACKLOG_LOG_SECONDS):
        logger.warning(
            "usage stream backlog over its high-water mark: %d events waiting (mark %d), "
            "the oldest %.0f s old; the gateway keeps recording, ingest is behind",
            numbers.depth,
            mark,
            lag_seconds(numbers),
        )
    return numbers


def lag_seconds(numbers: PipelineNumbers) -> float:
    """Age of the oldest waiting event (0 when none waits)."""
    if numbers.oldest_ms is None:
        return 0.0
    return max(0.0, time.time() - numbers.oldest_ms / 1000)


class PipelineCollector(Collector):
    """The pipeline's metric families for one scrape."""

    def __init__(self, numbers: PipelineNumbers) -> None:
        self.numbers = numbers

    def collect(self) -> list[Metric]:
        """Queue depth, lag, high-water mark, dead letters, deliveries, quarantine gauges."""
        values = self.numbers.values
        queue = GaugeMetricFamily(
            "gateway_usage_queue_depth", "Usage events waiting in the Redis stream for ingest."
        )
        queue.add_metric([], float(self.numbers.depth))
        lag = GaugeMetricFamily(
            "gateway_usage_ingest_lag_seconds",
            "Age of the oldest usage event not yet stored in the database (0: none waiting).",
        )
        lag.add_metric([], lag_seconds(self.numbers))
        mark = high_water()
        water = GaugeMetricFamily(
            "gateway_usage_queue_high_water",
            "The usage stream length past which the backlog is reported (a setting).",
        )
        water.add_metric([], float(mark))
        over = GaugeMetricFamily(
            "gateway_usage_queue_over_high_water",
            "1 while more usage events wait than the high-water mark (alert on it), else 0.",
        )
        over.add_metric([], 1.0 if self.numbers.depth > mark else 0.0)
        dead = CounterMetricFamily(
            "gateway_usage_dead_letters", "Usage events the database could not store at all."
        )
        dead.add_metric([], values.get(DEAD_LETTERS_METRIC, 0.0))
        deliveries = CounterMetricFamily(
            "gateway_webhook_deliveries",
            "Webhook delivery attempts by outcome.",
            labels=["outcome"],
        )
        for outcome in DELIVERY_OUTCOMES:
            key = f"{WEBHOOK_DELIVERIES_METRIC}:{outcome}"
            deliveries.add_metric([outcome], values.get(key, 0.0))
        return [
            queue,
            lag,
            water,
            over,
            dead,
            deliveries,
            self._gauge(QUARANTINED_EVENTS_METRIC, "Usage events set aside, awaiting staff."),
            self._gauge(
                QUARANTINED_DELIVERIES_METRIC, "Webhook deliveries set aside, awaiting staff."
            ),
        ]

    def _gauge(self, name: str, documentation: str) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, documentation)
        family.add_metric([], self.numbers.values.get(name, 0.0))
        return family


def _text(raw: bytes | str) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else raw


def _number(raw: bytes | str) -> float:
    try:
        return float(raw)
    except ValueError:
        return 0.0
