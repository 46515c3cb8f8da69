"""Prometheus metrics of the inference path, per node.

Under gunicorn every worker writes its numbers to memory-mapped files in the node's own directory
(PROMETHEUS_MULTIPROC_DIR, set and cleared at node start by the master, see
gateway_project/gunicorn_conf.py). `/metrics`, whichever worker answers it, renders the sum over the
node's workers, those that died included, so a counter never goes down; Prometheus sums the nodes.
Without that directory (a single process) the numbers are this process's own.

Writing those files costs a few microseconds per sample, so requests do not write them: `count` and
`observe` add to this worker's pending numbers in memory, and `metrics_flush` writes the sums once a
second (a background loop), before this worker answers a scrape and at shutdown. A worker killed
with SIGKILL loses at most its last second of numbers; the counts already written stay.

The billing pipeline's numbers live in Redis and are the same for the whole deployment: every node
reports the same value, so aggregate them across nodes with max(), not sum().
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from collections import defaultdict
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from billing.services.usage import (
    BILLING_METRICS_KEY,
    DEAD_LETTERS_METRIC,
    QUARANTINED_DELIVERIES_METRIC,
    QUARANTINED_EVENTS_METRIC,
    WEBHOOK_DELIVERIES_METRIC,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Upstream outcomes counted by gateway_webhook_deliveries_total.
DELIVERY_OUTCOMES = ("succeeded", "failed")

registry = CollectorRegistry()
requests_total = Counter(
    "gateway_requests",
    "Inference requests by route, status and model slug (slug 'unknown' until resolved).",
    ["route", "status", "slug"],
    registry=registry,
)
request_duration = Histogram(
    "gateway_request_duration_seconds",
    "Total time of an inference request.",
    ["route"],
    buckets=BUCKETS_SECONDS,
    registry=registry,
)
upstream_duration = Histogram(
    "gateway_upstream_duration_seconds",
    "Time spent on the upstream, to its last byte.",
    ["route"],
    buckets=BUCKETS_SECONDS,
    registry=registry,
)
overhead = Histogram(
    "gateway_overhead_seconds",
    "Time the gateway itself added: total minus upstream time.",
    ["route"],
    buckets=BUCKETS_SECONDS,
    registry=registry,
)
tokens_total = Counter(
    "gateway_tokens",
    "Tokens by model slug and kind (input, output, cached).",
    ["slug", "kind"],
    registry=registry,
)
limit_rejections = Counter(
    "gateway_limit_rejections",
    "Requests rejected by a limit, by limit type (request, token, spend) and unit.",
    ["type", "unit"],
    registry=registry,
)
upstream_errors = Counter(
    "gateway_upstream_errors",
    "Upstream attempts that failed, by reason (the error code the client would see).",
    ["reason"],
    registry=registry,
)
cache_version_checks = Counter(
    "gateway_cache_version_checks",
    "Configuration version reads made by requests (the listener was late), by result.",
    ["result"],
    registry=registry,
)
streams_in_flight = Gauge(
    "gateway_streams_in_flight",
    "Streaming responses being relayed now.",
    registry=registry,
    multiprocess_mode="livesum",
)
key_cache_age = Gauge(
    "gateway_key_cache_age_seconds",
    "Seconds since the key and route caches were last confirmed current (worst live worker).",
    registry=registry,
    multiprocess_mode="livemax",
)


Labels = tuple[str, ...]


class _Pending:
    """This worker's numbers not yet written. Requests add and flushes take them on the worker's
    event loop thread only, so no lock: a flush swaps in fresh dicts and writes the ones it took."""

    def __init__(self) -> None:
        # The metric and its label values (in the metric's label order) -> amount.
        self.counts: defaultdict[tuple[Counter, Labels], float] = defaultdict(float)
        # Per histogram series: a count per bucket (the last one +Inf), then the sum of values.
        self.observed: dict[tuple[Histogram, Labels], list[float]] = {}


_pending = _Pending()


def count(metric: Counter, labels: Labels, amount: float = 1.0) -> None:
    """Add to a counter (written out by the next flush)."""
    _pending.counts[metric, labels] += amount


def observe(metric: Histogram, labels: Labels, seconds: float) -> None:
    """Record one duration in a histogram (written out by the next flush)."""
    series = _pending.observed.get((metric, labels))
    if series is None:
        series = _pending.observed[metric, labels] = [0.0] * (len(BUCKETS_SECONDS) + 2)
    # bisect_left: the first bucket whose upper bound is >= the value, as Histogram.observe.
    series[bisect_left(BUCKETS_SECONDS, seconds)] += 1
    series[-1] += seconds


def metrics_flush() -> None:
    """Write this worker's pending numbers to its metrics (its files in multiprocess mode)."""
    counts, _pending.counts = _pending.counts, defaultdict(float)
    observed, _pending.observed = _pending.observed, {}
    for (counter, labels), amount in counts.items():
        counter.labels(*labels).inc(amount)
    for (histogram, labels), series in observed.items():
        child = histogram.labels(*labels)
        # Histogram has no call for many observations at once: its bucket and sum values are
        # what Histogram.observe itself increments (prometheus_client is pinned).
        for bucket, hits in zip(child._buckets, series[:-1], strict=True):
            if hits:
                bucket.inc(hits)
        child._sum.inc(series[-1])


def _multiproc_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def node_render() -> bytes:
    """The node's metrics: every worker's files summed in multiprocess mode, else this process's."""
    directory = _multiproc_dir()
    if directory is None:
        return generate_latest(registry)
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(merged)


class _ClusterNumbers(Collector):
    """The deployment-wide numbers read from Redis for one scrape."""

    def __init__(self, *, depth: int, billing: dict[bytes, bytes]) -> None:
        self.depth = depth
        self.values = {k.decode(errors="replace"): _number(v) for k, v in billing.items()}

    def collect(self) -> list[Metric]:
        queue = GaugeMetricFamily(
            "gateway_usage_queue_depth", "Usage events waiting in the Redis stream for ingest."
        )
        queue.add_metric([], float(self.depth))
        dead = CounterMetricFamily(
            "gateway_usage_dead_letters", "Usage events the database could not store at all."
        )
        dead.add_metric([], self.values.get(DEAD_LETTERS_METRIC, 0.0))
        deliveries = CounterMetricFamily(
            "gateway_webhook_deliveries",
            "Webhook delivery attempts by outcome.",
            labels=["outcome"],
        )
        for outcome in DELIVERY_OUTCOMES:
            deliveries.add_metric(
                [outcome], self.values.get(f"{WEBHOOK_DELIVERIES_METRIC}:{outcome}", 0.0)
            )
        return [
            queue,
            dead,
            deliveries,
            self._gauge(QUARANTINED_EVENTS_METRIC, "Usage events set aside, awaiting staff."),
            self._gauge(
                QUARANTINED_DELIVERIES_METRIC, "Webhook deliveries set aside, awaiting staff."
            ),
        ]

    def _gauge(self, name: str, documentation: str) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, documentation)
        family.add_metric([], self.values.get(name, 0.0))
        return family


def _number(raw: bytes) -> float:
    try:
        return float(raw)
    except ValueError:
        return 0.0


async def metrics_gather(client: Any, *, stream: str) -> bytes:
    """The text exposition of /metrics: this node's numbers, then the cluster's from Redis (left
    out when Redis does not answer, rather than reported as zero)."""
    metrics_flush()
    node = await asyncio.to_thread(node_render)
    try:
        depth = await client.xlen(stream)
        billing = await client.hgetall(BILLING_METRICS_KEY)
    except (RedisError, OSError):
        return node
    cluster = CollectorRegistry()
    cluster.register(_ClusterNumbers(depth=int(depth), billing=billing))
    return node + generate_latest(cluster)
