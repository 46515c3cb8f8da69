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
reports the same value, so aggregate them across nodes with max(), not sum()
(billing/services/pipeline_metrics.py).
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
from redis.exceptions import RedisError

from billing.services.pipeline_metrics import (
    PipelineCollector,
    pipeline_commands,
    pipeline_numbers,
)
from gateway_project.kernel.meanwhile import afterwards_run

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

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
    "Requests rejected by a limit, by limit type (request, token, spend), unit and model slug.",
    ["type", "unit", "slug"],
    registry=registry,
)
upstream_errors = Counter(
    "gateway_upstream_errors",
    "Upstream attempts that failed, by reason (the error code the client would see) and slug.",
    ["reason", "slug"],
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
circuit_state = Gauge(
    "gateway_circuit_state",
    "Circuit breaker of a target (PROVIDER#position) as this node last saw it: 0 closed, 1 open, "
    "2 half-open.",
    ["slug", "target"],
    registry=registry,
    multiprocess_mode="mostrecent",
)
circuit_transitions = Counter(
    "gateway_circuit_transitions",
    "Circuit breaker state changes made by this node, by the state entered.",
    ["slug", "target", "to"],
    registry=registry,
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


async def metrics_gather(client: Any) -> bytes:
    """The text exposition of /metrics: this node's numbers, then the billing pipeline's from
    Redis (left out when Redis does not answer, rather than reported as zero)."""
    afterwards_run()  # the requests that just ended count
    metrics_flush()
    node = await asyncio.to_thread(node_render)
    try:
        pipe = client.pipeline(transaction=False)
        pipeline_commands(pipe)
        replies = await pipe.execute()
    except (RedisError, OSError):
        return node
    cluster = CollectorRegistry()
    cluster.register(PipelineCollector(pipeline_numbers(replies)))
    return node + generate_latest(cluster)
