"""The billing pipeline's Prometheus numbers, read from Redis at each scrape.

They are the same for the whole deployment, so every gateway node's `/metrics` and every Celery
worker's metrics port report the same values: aggregate them with max(), not sum().
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

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


class PipelineCollector(Collector):
    """The pipeline's metric families for one scrape."""

    def __init__(self, numbers: PipelineNumbers) -> None:
        self.numbers = numbers

    def collect(self) -> list[Metric]:
        """Queue depth and lag, dead letters, deliveries by outcome, quarantine gauges."""
        values = self.numbers.values
        queue = GaugeMetricFamily(
            "gateway_usage_queue_depth", "Usage events waiting in the Redis stream for ingest."
        )
        queue.add_metric([], float(self.numbers.depth))
        lag = GaugeMetricFamily(
            "gateway_usage_ingest_lag_seconds",
            "Age of the oldest usage event not yet stored in the database (0: none waiting).",
        )
        lag.add_metric([], self._lag_seconds())
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
            dead,
            deliveries,
            self._gauge(QUARANTINED_EVENTS_METRIC, "Usage events set aside, awaiting staff."),
            self._gauge(
                QUARANTINED_DELIVERIES_METRIC, "Webhook deliveries set aside, awaiting staff."
            ),
        ]

    def _lag_seconds(self) -> float:
        if self.numbers.oldest_ms is None:
            return 0.0
        return max(0.0, time.time() - self.numbers.oldest_ms / 1000)

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
