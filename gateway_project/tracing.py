"""Whether this process traces: OpenTelemetry, configured by the standard OTEL_* variables.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_TRACES_EXPORTER
is set (and OTEL_SDK_DISABLED is not `true`). When off, nothing of OpenTelemetry is imported: the
check reads the environment only. When on, gateway_project/otel.py builds the tracer provider and
instruments Django, Celery and httpx (the webhook POST); the inference path gets its spans through
gateway_project/kernel/tracing.py.
"""

from __future__ import annotations

import os


def tracing_wanted() -> bool:
    """Whether the environment asks for traces."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    endpoints = (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ""),
    )
    return any(endpoint.strip() for endpoint in endpoints)


def tracing_setup() -> None:
    """Start tracing in this process if the environment asks for it (once, at Django setup)."""
    if not tracing_wanted():
        return
    from gateway_project.otel import otel_start

    otel_start()
