"""A node's Prometheus numbers as tests read them: from `/metrics`, or per worker from its files."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families


def sample_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples `name` of a text exposition whose labels include `labels`."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def requests_by_worker(directory: Path, **labels: str) -> dict[int, float]:
    """gateway_requests_total with `labels` per worker pid, from the node's metric files."""
    counts = {}
    for path in sorted(directory.glob("counter_*.db")):
        families = MultiProcessCollector.merge([str(path)], accumulate=True)
        counts[int(path.stem.removeprefix("counter_"))] = sum(
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == "gateway_requests_total" and labels.items() <= sample.labels.items()
        )
    return counts
