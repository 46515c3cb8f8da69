"""Metric names in PromQL expressions, and the names the gateway and the worker export."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPINGS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![0-9A-Za-z_:.])[A-Za-z_:][A-Za-z0-9_:]*")
KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
    | {"offset", "bool", "inf", "nan"}
)
# Series Prometheus itself makes for every target.
PROMETHEUS_OWN = frozenset({"up", "scrape_duration_seconds"})


def promql_metrics(expr: str) -> set[str]:
    """The metric names an expression selects (functions, labels, keywords left out)."""
    text = _STRINGS.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPINGS.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        following = text[match.end() :].lstrip()[:1]
        word = match.group()
        if following != "(" and word.lower() not in KEYWORDS and not word.startswith("$"):
            names.add(word)
    return names


def exposition_names(text: str) -> set[str]:
    """Every sample name of a text exposition (`_total`, `_bucket`, `_sum`, `_count` included)."""
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
