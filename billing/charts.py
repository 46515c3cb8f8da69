"""Bar charts for the usage dashboard: the data for Chart.js (served from billing/static, never a
CDN) and the same bars as inline SVG, shown when scripts are off."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from billing.selectors import UsageBucket

WIDTH, HEIGHT, GAP = 480, 100, 1.0


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    tooltip: str


@dataclass(frozen=True)
class Chart:
    """One metric of one slug over consecutive buckets, scaled to its own peak."""

    title: str
    bars: list[Bar]
    total: int
    peak: int
    labels: list[str]
    values: list[int]
    metric: str
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def data(self) -> dict[str, object]:
        """What the page's Chart.js script draws (passed through `json_script`)."""
        return {
            "title": self.title,
            "labels": self.labels,
            "values": self.values,
            "metric": self.metric,
        }


def chart_build(*, title: str, buckets: Sequence[UsageBucket], metric: str, stamp: str) -> Chart:
    """Bars of `metric` ("requests" or "tokens"); `stamp` formats tooltip times."""
    values = [int(getattr(b, metric)) for b in buckets]
    peak = max(values, default=0)
    slot = WIDTH / max(len(values), 1)
    bars, labels = [], []
    for index, (bucket, value) in enumerate(zip(buckets, values, strict=True)):
        labels.append(bucket.start.strftime(stamp))
        height = HEIGHT * value / peak if peak else 0.0
        tooltip = f"{bucket.start.strftime(stamp)}: {value:,} {metric}"
        bars.append(Bar(index * slot, HEIGHT - height, max(slot - GAP, 1.0), height, tooltip))
    return Chart(
        title=title,
        bars=bars,
        total=sum(values),
        peak=peak,
        labels=labels,
        values=values,
        metric=metric,
    )


def slug_charts(*, day: Sequence[UsageBucket], month: Sequence[UsageBucket]) -> list[Chart]:
    """The four charts of one slug: requests and tokens, hourly over 24 h and daily over 30 days."""
    return [
        chart_build(title="Requests, last 24 h", buckets=day, metric="requests", stamp="%H:00"),
        chart_build(title="Tokens, last 24 h", buckets=day, metric="tokens", stamp="%H:00"),
        chart_build(
            title="Requests, last 30 days", buckets=month, metric="requests", stamp="%b %d"
        ),
        chart_build(title="Tokens, last 30 days", buckets=month, metric="tokens", stamp="%b %d"),
    ]
