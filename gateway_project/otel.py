"""OpenTelemetry in this process, imported only when tracing is on (gateway_project/tracing.py).

The provider follows the standard variables: OTEL_TRACES_EXPORTER (`otlp`, the default, over
http/protobuf; `console`; `none`), OTEL_EXPORTER_OTLP_* (endpoint, headers, timeout, compression),
OTEL_TRACES_SAMPLER(_ARG), OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*. Django,
Celery and httpx (the webhook POST) get the official instrumentations; the inference path, which
runs outside Django, gets its spans from OtelTracer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import Token
from importlib.metadata import entry_points
from typing import cast

from django.core.exceptions import ImproperlyConfigured
from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from gateway_project.kernel.tracing import RequestFacts, tracer_install

DEFAULT_SERVICE_NAME = "inference-gateway"
EXPORTER_GROUP = "opentelemetry_traces_exporter"
# What a client may send to continue its own trace; nothing else of its headers is read.
_PROPAGATED = frozenset({b"traceparent", b"tracestate"})


def otel_start() -> None:
    """Provider from the environment, the instrumentations, the inference path's tracer."""
    processors = [BatchSpanProcessor(exporter) for exporter in exporters_from_env()]
    provider = provider_build(processors=processors)
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument(tracer_provider=provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    tracer_install(OtelTracer(provider))


def provider_build(*, processors: Sequence[SpanProcessor]) -> TracerProvider:
    """A tracer provider (sampler from OTEL_TRACES_SAMPLER) feeding `processors`."""
    resource = Resource.create()
    if resource.attributes.get(SERVICE_NAME, "unknown_service") == "unknown_service":
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def exporters_from_env() -> list[SpanExporter]:
    """The exporters OTEL_TRACES_EXPORTER names (default `otlp`); an unknown name stops start-up."""
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")
    return [_exporter(name.strip().lower()) for name in names if name.strip().lower() != "none"]


def _exporter(name: str) -> SpanExporter:
    if name == "otlp":
        protocol = os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
        )
        if protocol.strip() not in ("", "http/protobuf"):
            raise ImproperlyConfigured(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: the gateway exports OTLP over "
                "http/protobuf only (a collector accepts it on port 4318)."
            )
        name = "otlp_proto_http"
    found = entry_points(group=EXPORTER_GROUP, name=name)
    if not found:
        raise ImproperlyConfigured(
            f"OTEL_TRACES_EXPORTER names {name!r}, which is not available: use otlp, console "
            "or none."
        )
    exporter: SpanExporter = next(iter(found)).load()()
    return exporter


class OtelTracer:
    """The inference path's spans on an OpenTelemetry tracer provider."""

    def __init__(self, provider: TracerProvider) -> None:
        self._tracer = provider.get_tracer("gateway.inference")

    @contextmanager
    def span(self, name: str) -> Iterator[Span]:
        """A child of the current span (its exception, if any, recorded on it)."""
        with self._tracer.start_as_current_span(name) as span:
            yield span

    def request_start(
        self, headers: Iterable[tuple[bytes, bytes]], request_id: str
    ) -> tuple[Span, object]:
        """The request's server span, a child of the caller's `traceparent` if it sent one."""
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in headers
            if name.lower() in _PROPAGATED
        }
        parent = propagate.extract(carrier)
        span = self._tracer.start_span(
            "inference request",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"gateway.request_id": request_id},
        )
        return span, context.attach(trace.set_span_in_context(span, parent))

    def request_end(self, handle: object, facts: RequestFacts) -> None:
        """Close the request's span with its outcome (an error status for a 5xx)."""
        span, token = cast(tuple[Span, Token[Context]], handle)  # what request_start returned
        context.detach(token)
        span.set_attributes(
            {
                "http.response.status_code": facts.status,
                "gateway.slug": facts.slug or "unknown",
                "gateway.target": facts.target,
                "gateway.stream": facts.stream,
            }
        )
        if facts.status >= 500:
            span.set_status(Status(StatusCode.ERROR, facts.error_code or ""))
        span.end()

    def inject(self, headers: dict[str, str]) -> None:
        """W3C trace context of the current span into outgoing headers."""
        propagate.inject(headers)

    def current_annotate(self, attributes: Mapping[str, str | int]) -> None:
        """Attributes on the current span (Django's, for a management API call)."""
        trace.get_current_span().set_attributes(dict(attributes))
