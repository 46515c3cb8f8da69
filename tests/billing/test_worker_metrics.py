"""The Celery worker's metrics endpoint: off by default, the /metrics access rule, the numbers."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from django_redis import get_redis_connection

from billing.services.usage import BILLING_METRICS_KEY, USAGE_STREAM, WEBHOOK_DELIVERIES_METRIC
from gateway_project.worker_metrics import metrics_app, worker_metrics_serve
from tests.faults.processes import free_port
from tests.metrics_read import sample_sum


def _get(path: str = "/metrics", *, client: str = "127.0.0.1", **headers: str) -> tuple[str, Any]:
    environ = {"PATH_INFO": path, "REMOTE_ADDR": client}
    environ.update({f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()})
    started: list[str] = []
    body = b"".join(metrics_app(environ, lambda status, _headers: started.append(status)))
    return started[0], body.decode()


def test_no_port_is_opened_unless_the_setting_asks(settings):
    settings.GATEWAY_WORKER_METRICS_PORT = 0

    assert worker_metrics_serve() is None


def test_the_port_serves_the_pipeline_numbers(settings):
    server = worker_metrics_serve(free_port())
    assert server is not None
    redis = get_redis_connection("default")
    redis.hset(BILLING_METRICS_KEY, f"{WEBHOOK_DELIVERIES_METRIC}:failed", 7)

    try:
        text = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics").text
    finally:
        server.shutdown()
        server.server_close()
        redis.delete(BILLING_METRICS_KEY)

    assert sample_sum(text, "gateway_webhook_deliveries_total", outcome="failed") == 7
    assert "gateway_usage_ingest_lag_seconds" in text


def test_an_empty_queue_has_no_lag():
    get_redis_connection("default").delete(USAGE_STREAM)

    status, text = _get()

    assert status == "200 OK"
    assert sample_sum(text, "gateway_usage_ingest_lag_seconds") == 0
    assert sample_sum(text, "gateway_usage_queue_depth") == 0


@pytest.mark.parametrize(
    ("client", "headers"),
    [("10.1.2.3", {}), ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}), ("::1", {"Via": "x"})],
)
def test_without_a_token_only_direct_loopback_clients_read_it(settings, client, headers):
    settings.GATEWAY_METRICS_TOKEN = ""

    status, body = _get(client=client, **headers)

    assert status == "403 Forbidden"
    assert json.loads(body)["error"]["code"] == "metrics_forbidden"


def test_with_a_token_set_loopback_needs_it_too(settings):
    settings.GATEWAY_METRICS_TOKEN = "worker-token-0451"

    missing = _get()
    wrong = _get(Authorization="Bearer worker-token")
    basic = _get(Authorization="Basic worker-token-0451")
    right = _get(client="10.1.2.3", Authorization="Bearer worker-token-0451")

    for status, body in (missing, wrong, basic):
        assert status == "401 Unauthorized"
        assert json.loads(body)["error"]["code"] == "metrics_unauthorized"
    assert right[0] == "200 OK"
    assert "gateway_usage_queue_depth" in right[1]


def test_other_paths_are_an_envelope_404():
    status, body = _get("/admin/")

    assert status == "404 Not Found"
    assert json.loads(body)["error"]["code"] == "not_found"
