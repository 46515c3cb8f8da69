"""Bar charts for the usage dashboard: the data for Chart.js (served from billing/static, never a
CDN) and the same bars as inline SVG, shown when scripts are off."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from billing.selectors import UsageBucket
from gateway_project.kernel.money import amount_text

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
    total: int | str
    peak: int | str
    labels: list[str]
    values: list[int] | list[float]
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


def spend_chart_build(
    *, title: str, buckets: Sequence[UsageBucket], currency: str, stamp: str
) -> Chart:
    """Bars of spend; the total and tooltips are exact amounts, the bars' scale is for the eye."""
    amounts = [b.spend if b.currency == currency else Decimal(0) for b in buckets]
    peak = max(amounts, default=Decimal(0))
    slot = WIDTH / max(len(amounts), 1)
    bars, labels = [], []
    for index, (bucket, amount) in enumerate(zip(buckets, amounts, strict=True)):
        labels.append(bucket.start.strftime(stamp))
        height = float(HEIGHT * amount / peak) if peak else 0.0
        tooltip = f"{bucket.start.strftime(stamp)}: {amount_text(amount)} {currency}"
        bars.append(Bar(index * slot, HEIGHT - height, max(slot - GAP, 1.0), height, tooltip))
    return Chart(
        title=title,
        bars=bars,
        total=f"{amount_text(sum(amounts, Decimal(0)))} {currency}",
        peak=f"{amount_text(peak)} {currency}",
        labels=labels,
        values=[float(amount) for amount in amounts],
        metric=f"spend ({currency})",
    )


def slug_charts(*, day: Sequence[UsageBucket], month: Sequence[UsageBucket]) -> list[Chart]:
    """The charts of one slug: requests and tokens, hourly over 24 h and daily over 30 days, and
    spend next to tokens when the slug's events carry a cost."""
    currency = next((b.currency for b in (*reversed(month), *reversed(day)) if b.currency), "")
    charts = [
        chart_build(title="Requests, last 24 h", buckets=day, metric="requests", stamp="%H:00"),
        chart_build(title="Tokens, last 24 h", buckets=day, metric="tokens", stamp="%H:00"),
    ]
    if currency:
        charts.append(_spend(day, currency, window="24 h", stamp="%H:00"))
    charts += [
        chart_build(
            title="Requests, last 30 days", buckets=month, metric="requests", stamp="%b %d"
        ),
        chart_build(title="Tokens, last 30 days", buckets=month, metric="tokens", stamp="%b %d"),
    ]
    if currency:
        charts.append(_spend(month, currency, window="30 days", stamp="%b %d"))
    return charts


def _spend(buckets: Sequence[UsageBucket], currency: str, *, window: str, stamp: str) -> Chart:
    title = f"Spend ({currency}), last {window}"
    return spend_chart_build(title=title, buckets=buckets, currency=currency, stamp=stamp)
