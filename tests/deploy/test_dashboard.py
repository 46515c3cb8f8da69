"""deploy/grafana/gateway.json and the alert rules of docs/operations.md: the dashboard passes a
schema check, and every PromQL expression of both names only metrics a real gateway node and a
Celery worker export (scraped from them, with every labelled series made to appear)."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]  # no stubs in the dev lock
import pytest
import yaml
from django_redis import get_redis_connection

from gateway_project.env import BASE_DIR
from gateway_project.worker_metrics import metrics_app
from routing import metrics
from tests.promql import PROMETHEUS_OWN, exposition_names, promql_metrics
from tests.proxy.conftest import (  # noqa: F401 - fixtures reused from the proxy suite
    SLUG,
    GatewayThread,
    gateway,
    tenant,
    upstream,
)

DASHBOARD = BASE_DIR / "deploy" / "grafana" / "gateway.json"
OPERATIONS = BASE_DIR / "docs" / "operations.md"
_TARGET = {
    "type": "object",
    "required": ["refId", "expr", "datasource"],
    "properties": {"refId": {"type": "string"}, "expr": {"type": "string", "minLength": 1}},
}
_GRID = {
    "type": "object",
    "required": ["h", "w", "x", "y"],
    "properties": {k: {"type": "integer", "minimum": 0, "maximum": 24} for k in "wx"},
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 30},
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {"list": {"type": "array"}},
        },
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos"],
                "properties": {
                    "id": {"type": "integer"},
                    "type": {"enum": ["row", "timeseries", "stat", "gauge", "table"]},
                    "gridPos": _GRID,
                    "targets": {"type": "array", "items": _TARGET},
                },
                "if": {"properties": {"type": {"not": {"const": "row"}}}},
                "then": {"required": ["targets", "datasource"]},
            },
        },
    },
}


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the dashboard."""
    return [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]


def alert_exprs() -> list[str]:
    """Every `expr` of the Prometheus rule file shown in docs/operations.md."""
    blocks = re.findall(r"```yaml\n(.*?)```", OPERATIONS.read_text(), re.DOTALL)
    rules = [yaml.safe_load(block) for block in blocks if "groups:" in block]
    return [rule["expr"] for doc in rules for g in doc["groups"] for rule in g["rules"]]


def test_the_dashboard_passes_the_schema_check():
    dashboard = _dashboard()

    jsonschema.validate(dashboard, SCHEMA)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert {"datasource"} <= {v["name"] for v in dashboard["templating"]["list"]}


def test_the_schema_check_refuses_a_panel_without_queries():
    broken = _dashboard()
    broken["panels"][1].pop("targets")

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_the_name_parser_finds_metrics_and_skips_functions_labels_and_ranges():
    expr = (
        'histogram_quantile(0.99, sum by (le, slug) (rate(gateway_x_bucket{slug!="a_b"}[5m])))'
        " / on (slug) max without (kind) (gateway_y_total offset 1h) > bool 3"
    )

    assert promql_metrics(expr) == {"gateway_x_bucket", "gateway_y_total"}


def _exported(gateway_url: str, key: str) -> set[str]:
    # Every labelled series shows once it has a sample: a request, a limit rejection, an
    # upstream error (the registry's own families), then the node's and the worker's scrapes.
    httpx.post(
        f"{gateway_url}/v1/chat/completions",
        json={"model": SLUG, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        headers={"Authorization": f"Bearer {key}"},
    )
    metrics.limit_rejections.labels("request", "minute", SLUG).inc(0)
    metrics.upstream_errors.labels("bad_gateway", SLUG).inc(0)
    metrics.cache_version_checks.labels("current").inc(0)
    node = httpx.get(f"{gateway_url}/metrics").text
    started: list[str] = []
    worker = b"".join(
        metrics_app(
            {"PATH_INFO": "/metrics", "REMOTE_ADDR": "127.0.0.1"},
            lambda status, headers: started.append(status),
        )
    ).decode()
    assert started == ["200 OK"]
    return exposition_names(node) | exposition_names(worker)


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_expression_names_a_metric_the_gateway_or_the_worker_exports(
    gateway,  # noqa: F811
    tenant,  # noqa: F811
    source,
):
    get_redis_connection("default").ping()
    exprs = dashboard_exprs() if source == "dashboard" else alert_exprs()

    exported = _exported(gateway.url, tenant.key) | PROMETHEUS_OWN

    assert len(exprs) >= 8
    unknown = {
        name: expr for expr in exprs for name in promql_metrics(expr) if name not in exported
    }
    assert unknown == {}
    named = [promql_metrics(expr) for expr in exprs]
    assert all(named), "every expression selects at least one metric"
