"""OpenTelemetry spans of the inference path, and what tracing costs when it is off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway_project.env import BASE_DIR
from gateway_project.kernel.tracing import tracer_install
from gateway_project.otel import OtelTracer, provider_build
from gateway_project.tracing import tracing_wanted
from tests.proxy.conftest import SLUG

CHAT = {"model": SLUG, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, every finished span kept in memory."""
    exporter = InMemorySpanExporter()
    tracer_install(OtelTracer(provider_build(processors=[SimpleSpanProcessor(exporter)])))
    yield exporter
    tracer_install(None)


def test_a_request_is_one_span_with_admission_upstream_and_usage_record_children(
    gateway, tenant, upstream, spans
):
    caller = {"traceparent": f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"}

    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {tenant.key}", **caller},
    )

    assert response.status_code == 200
    by_name = {span.name: span for span in spans.get_finished_spans()}
    request = by_name["inference request"]
    assert request.context.trace_id == int(CALLER_TRACE, 16)
    assert request.parent is not None and request.parent.span_id == 0x00F067AA0BA902B7
    assert request.attributes["gateway.request_id"] == response.headers["x-request-id"]
    assert request.attributes["gateway.slug"] == SLUG
    assert request.attributes["http.response.status_code"] == 200
    for child in ("admission", "upstream", "usage record"):
        assert by_name[child].parent.span_id == request.context.span_id
        assert by_name[child].context.trace_id == request.context.trace_id
    # The upstream continues the trace under the gateway's upstream span.
    sent = upstream.server.requests[-1].headers["traceparent"]
    upstream_span = by_name["upstream"].context
    assert sent == f"00-{upstream_span.trace_id:032x}-{upstream_span.span_id:016x}-01"


def test_a_call_drafted_while_its_admission_waits_carries_the_upstream_spans_context(
    gateway, token_limited, upstream, spans, settings
):
    # Under a limit, and with the breakers known, the call is drafted during the admission (in
    # its span): the trace context must still be the upstream span's.
    settings.GATEWAY_CIRCUIT_STATE_TTL = 300
    tenant = token_limited
    for _ in range(2):
        spans.clear()
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {tenant.key}"},
        )

        assert response.status_code == 200
        upstream_span = next(s for s in spans.get_finished_spans() if s.name == "upstream").context
        _, trace_id, parent_id, _ = upstream.server.requests[-1].headers["traceparent"].split("-")
        assert (trace_id, parent_id) == (
            f"{upstream_span.trace_id:032x}",
            f"{upstream_span.span_id:016x}",
        )


def test_a_rejected_key_still_gets_a_request_span_with_its_status(gateway, tenant, spans):
    httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": "Bearer sk-not-a-key"},
    )

    (request,) = [s for s in spans.get_finished_spans() if s.name == "inference request"]
    assert request.attributes["http.response.status_code"] == 401
    assert request.attributes["gateway.slug"] == "unknown"


def test_tracing_is_off_unless_an_otel_variable_asks_for_it(monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    off = tracing_wanted()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    on = tracing_wanted()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    disabled = tracing_wanted()

    assert (off, on, disabled) == (False, True, False)


# A gateway process serves an inference request (a 401: no database needed), then reports the
# OpenTelemetry modules it has loaded. redis-py imports part of OpenTelemetry by itself when it is
# installed (for its own metrics, off unless configured): that part is the baseline.
_PROBE = """
import asyncio, json, sys

def loaded():
    return sorted(name for name in sys.modules if name.split(".")[0] == "opentelemetry")

if sys.argv[1] == "baseline":
    import redis, redis.asyncio
    print("PROBE", json.dumps({"status": 0, "otel": loaded()}))
    sys.exit(0)

from gateway_project.asgi import application

async def main():
    sent = []
    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}
    async def send(message):
        sent.append(message)
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "headers": [(b"authorization", b"Bearer sk-nope"), (b"host", b"localhost")],
             "client": ("127.0.0.1", 5000), "query_string": b"", "root_path": "",
             "scheme": "http", "http_version": "1.1", "server": ("127.0.0.1", 8000)}
    await application(scope, receive, send)
    return sent[0]["status"]

status = asyncio.run(main())
print("PROBE", json.dumps({"status": status, "otel": loaded()}), flush=True)
"""


def _probe(role: str, otel_env: dict[str, str]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(otel_env, DJANGO_SETTINGS_MODULE="gateway_project.settings")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, role],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("PROBE "))
    report: dict[str, Any] = json.loads(line.removeprefix("PROBE "))
    return report


@pytest.mark.parametrize(
    ("otel_env", "traced"), [({}, False), ({"OTEL_TRACES_EXPORTER": "console"}, True)]
)
def test_with_tracing_off_the_gateway_imports_nothing_of_opentelemetry(otel_env, traced):
    baseline = set(_probe("baseline", otel_env)["otel"])

    report = _probe("gateway", otel_env)

    assert report["status"] == 401
    added = set(report["otel"]) - baseline
    # With tracing on the gateway's own imports show: the probe can see them.
    assert ("opentelemetry.sdk.trace" in added) is traced
    assert bool(added) is traced
