"""Prometheus text metrics of the inference path, kept per worker process.

Each gunicorn worker counts what it served and `/metrics` answers with that worker's numbers,
labelled with `pid` so a scraper (or a sum over series) can tell workers apart.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field

BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
Labels = tuple[tuple[str, str], ...]


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_MS) + 1))
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(BUCKETS_MS, value)] += 1
        self.total += value
        self.n += 1


_counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
_histograms: dict[str, dict[Labels, _Histogram]] = defaultdict(lambda: defaultdict(_Histogram))
_gauges: dict[str, float] = defaultdict(float, {"gateway_streams_in_flight": 0.0})
_HELP = {
    "gateway_requests_total": "Inference requests by route, status and slug.",
    "gateway_tokens_total": "Tokens by slug and direction (input, output, cached).",
    "gateway_upstream_errors_total": "Upstream failures by kind.",
    "gateway_limit_rejections_total": "Requests rejected by limits, by type.",
    "gateway_request_duration_ms": "Total request time.",
    "gateway_upstream_duration_ms": "Time spent waiting on the upstream.",
    "gateway_overhead_duration_ms": "Gateway time: total minus upstream.",
    "gateway_streams_in_flight": "Streaming responses currently relayed.",
}


def metric_inc(name: str, labels: Labels, value: float = 1.0) -> None:
    """Add to a counter."""
    _counters[name][labels] += value


def metric_observe(name: str, labels: Labels, value_ms: float) -> None:
    """Record one duration (milliseconds) in a histogram."""
    _histograms[name][labels].observe(value_ms)


def metric_gauge_add(name: str, delta: float) -> None:
    """Move a gauge."""
    _gauges[name] += delta


def _fmt(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels] + ([extra] if extra else [])
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_render() -> bytes:
    """The Prometheus text exposition of this process."""
    pid = (("pid", str(os.getpid())),)
    lines: list[str] = []
    for name, series in _counters.items():
        lines += [f"# HELP {name} {_HELP.get(name, name)}", f"# TYPE {name} counter"]
        lines += [f"{name}{_fmt(pid + labels)} {value:g}" for labels, value in series.items()]
    for name, series in _histograms.items():
        lines += [f"# HELP {name} {_HELP.get(name, name)}", f"# TYPE {name} histogram"]
        for labels, hist in series.items():
            lines += _histogram_lines(name, pid + labels, hist)
    for name, value in _gauges.items():
        lines += [f"# HELP {name} {_HELP.get(name, name)}", f"# TYPE {name} gauge"]
        lines.append(f"{name}{_fmt(pid)} {value:g}")
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
