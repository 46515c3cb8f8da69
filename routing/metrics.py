"""Prometheus metrics of the inference path: counted per worker, served summed over workers.

Each worker counts in memory (no I/O on the request path) and publishes a snapshot to Redis every
second (`metrics_publish_loop`); `/metrics`, whichever worker answers it, renders the sum of every
live worker's latest snapshot, so a scrape sees the whole node. Without Redis it falls back to its
own numbers. A restarted worker's counters start again from zero (Prometheus treats it as a reset).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from billing.services.usage import (
    BILLING_METRICS_KEY,
    DEAD_LETTERS_METRIC,
    QUARANTINED_DELIVERIES_METRIC,
    QUARANTINED_EVENTS_METRIC,
)
from routing.periodic import every

BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
SNAPSHOT_PREFIX = "gw:metrics:"
SNAPSHOT_TTL = 5
Labels = tuple[tuple[str, str], ...]
logger = logging.getLogger(__name__)


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_MS) + 1))
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(BUCKETS_MS, value)] += 1
        self.total += value
        self.n += 1


@dataclass
class Registry:
    """Counters, histograms and gauges of one worker (or the sum of several)."""

    counters: dict[str, dict[Labels, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    histograms: dict[str, dict[Labels, _Histogram]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(_Histogram))
    )
    gauges: dict[str, float] = field(
        default_factory=lambda: defaultdict(float, {"gateway_streams_in_flight": 0.0})
    )


_local = Registry()
_HELP = {
    "gateway_requests_total": "Inference requests by route, status and slug.",
    "gateway_tokens_total": "Tokens by slug and kind (input, output, cached).",
    "gateway_upstream_errors_total": "Upstream failures by kind and slug.",
    "gateway_limit_rejections_total": "Requests rejected by limits, by type and slug.",
    "gateway_request_duration_ms": "Total request time.",
    "gateway_upstream_duration_ms": "Time spent on the upstream (to its last byte).",
    "gateway_overhead_duration_ms": "Gateway time: total minus upstream.",
    "gateway_streams_in_flight": "Streaming responses currently relayed.",
    "gateway_workers": "Worker processes whose snapshot is included.",
    "gateway_usage_stream_depth": "Usage events waiting in the Redis stream for ingest.",
    "gateway_usage_dead_letters_total": "Usage events the database could not store at all.",
    "gateway_billing_quarantined_events": "Usage events set aside by batching, awaiting staff.",
    "gateway_billing_quarantined_deliveries": "Webhook deliveries set aside, awaiting staff.",
    "gateway_cache_version_checks_total": (
        "Configuration version reads made by requests (the listener was late), by result."
    ),
}


def metric_inc(name: str, labels: Labels, value: float = 1.0) -> None:
    """Add to a counter."""
    _local.counters[name][labels] += value


def metric_observe(name: str, labels: Labels, value_ms: float) -> None:
    """Record one duration (milliseconds) in a histogram."""
    _local.histograms[name][labels].observe(value_ms)


def metric_gauge_add(name: str, delta: float) -> None:
    """Move a gauge."""
    _local.gauges[name] += delta


def metrics_snapshot() -> dict[str, Any]:
    """This worker's numbers as JSON-able data."""
    return {
        "c": [[n, list(lb), v] for n, s in _local.counters.items() for lb, v in s.items()],
        "h": [
            [n, list(lb), h.counts, h.total, h.n]
            for n, s in _local.histograms.items()
            for lb, h in s.items()
        ],
        "g": list(_local.gauges.items()),
    }


def metrics_merge(snapshots: list[dict[str, Any]]) -> Registry:
    """The sum of several workers' snapshots."""
    merged = Registry()
    for snap in snapshots:
        for name, labels, value in snap["c"]:
            merged.counters[name][_labels(labels)] += value
        for name, labels, counts, total, n in snap["h"]:
            hist = merged.histograms[name][_labels(labels)]
            hist.counts = [a + b for a, b in zip(hist.counts, counts, strict=True)]
            hist.total += total
            hist.n += n
        for name, value in snap["g"]:
            merged.gauges[name] += value
    return merged


def _labels(raw: list[Any]) -> Labels:
    return tuple((str(k), str(v)) for k, v in raw)


def _fmt(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels] + ([extra] if extra else [])
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_render(registry: Registry | None = None) -> bytes:
    """The Prometheus text exposition of a registry (default: this worker's)."""
    registry = registry or _local
    lines: list[str] = []
    for name, series in registry.counters.items():
        lines += [f"# HELP {name} {_HELP.get(name, name)}", f"# TYPE {name} counter"]
        lines += [f"{name}{_fmt(labels)} {value:g}" for labels, value in series.items()]
    for name, hists in registry.histograms.items():
        lines += [f"# HELP {name} {_HELP.get(name, name)}", f"# TYPE {name} histogram"]
        for labels, hist in hists.items():
            lines += _histogram_lines(name, labels, hist)
    for name, value in registry.gauges.items():
        lines += [f"# HELP {name} {_HELP.get(name, name)}", f"# TYPE {name} gauge"]
        lines.append(f"{name} {value:g}")
    return ("\n".join(lines) + "\n").encode()


def _histogram_lines(name: str, labels: Labels, hist: _Histogram) -> list[str]:
    out, running = [], 0
    for bound, count in zip((*BUCKETS_MS, "+Inf"), hist.counts, strict=True):
        running += count
        le = 'le="' + str(bound) + '"'
        out.append(f"{name}_bucket{_fmt(labels, le)} {running}")
    out.append(f"{name}_sum{_fmt(labels)} {hist.total:g}")
    out.append(f"{name}_count{_fmt(labels)} {hist.n}")
    return out


def _snapshot_key() -> str:
    return f"{SNAPSHOT_PREFIX}{socket.gethostname()}:{os.getpid()}"


async def metrics_publish(client: Any) -> None:
    """Store this worker's snapshot (expires unless refreshed)."""
    await client.set(_snapshot_key(), json.dumps(metrics_snapshot()), ex=SNAPSHOT_TTL)


async def metrics_publish_loop(client: Any, *, stop: asyncio.Event, interval: float = 1.0) -> None:
    """Publish every `interval` seconds until `stop` is set."""
    async for _ in every(stop, interval):
        try:
            await metrics_publish(client)
        except (RedisError, OSError):
            logger.debug("metrics snapshot not published", exc_info=True)


async def metrics_gather(client: Any, *, stream: str) -> bytes:
    """The node's metrics: every live worker's snapshot summed (this worker's alone on failure)."""
    try:
        await metrics_publish(client)
        keys = [key async for key in client.scan_iter(match=f"{SNAPSHOT_PREFIX}*", count=100)]
        raws = await client.mget(keys) if keys else []
        depth = await client.xlen(stream)
        billing = await client.hgetall(BILLING_METRICS_KEY)
    except (RedisError, OSError):
        return metrics_render()
    merged = metrics_merge([json.loads(raw) for raw in raws if raw])
    merged.gauges["gateway_workers"] = float(sum(1 for raw in raws if raw))
    merged.gauges["gateway_usage_stream_depth"] = float(depth)
    _billing_merge(merged, billing)
    return metrics_render(merged)


def _billing_merge(merged: Registry, billing: dict[bytes, bytes]) -> None:
    """The billing pipeline's numbers (written by Celery, the same for every node); zero until
    Celery has written them, so alerts on them work from the start."""
    merged.counters[DEAD_LETTERS_METRIC][()] = 0.0
    merged.gauges[QUARANTINED_EVENTS_METRIC] = merged.gauges[QUARANTINED_DELIVERIES_METRIC] = 0.0
    for raw_name, raw_value in billing.items():
        name = raw_name.decode(errors="replace")
        try:
            value = float(raw_value)
        except ValueError:
            continue
        if name.endswith("_total"):
            merged.counters[name][()] = value
        else:
            merged.gauges[name] = value
