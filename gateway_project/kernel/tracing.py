"""Spans of the inference path, free when tracing is off.

Tracing is switched on at process start (gateway_project/tracing.py) only when the OTEL_*
variables ask for it. Until then no tracer is installed and each helper here is one None check
that returns a shared no-op: the inference path neither imports OpenTelemetry nor allocates for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

_NOOP: AbstractContextManager[None] = contextlib.nullcontext()


class RequestFacts(Protocol):
    """What a finished inference request tells its span (routing's Call)."""

    request_id: str
    status: int
    error_code: str | None
    slug: str
    target: str
    stream: bool


class Tracer(Protocol):
    """The installed tracer (gateway_project/tracing.py builds it on OpenTelemetry)."""

    def span(self, name: str) -> AbstractContextManager[Any]: ...

    def request_start(self, headers: Iterable[tuple[bytes, bytes]], request_id: str) -> object: ...

    def request_end(self, handle: object, facts: RequestFacts) -> None: ...

    def inject(self, headers: dict[str, str]) -> None: ...

    def current_annotate(self, attributes: Mapping[str, str | int]) -> None: ...


class _Installed:
    tracer: Tracer | None = None


def tracer_install(tracer: Tracer | None) -> None:
    """Switch tracing on with `tracer` (None switches it off again)."""
    _Installed.tracer = tracer


def tracing_on() -> bool:
    """Whether a tracer is installed in this process."""
    return _Installed.tracer is not None


def span(name: str) -> AbstractContextManager[Any]:
    """A child span of the current one around a step (a no-op when tracing is off)."""
    tracer = _Installed.tracer
    return _NOOP if tracer is None else tracer.span(name)


def request_start(headers: Iterable[tuple[bytes, bytes]], request_id: str) -> object:
    """Open an inference request's span, continuing the caller's `traceparent`; None when off."""
    tracer = _Installed.tracer
    return None if tracer is None else tracer.request_start(headers, request_id)


def request_end(handle: object, facts: RequestFacts) -> None:
    """Close the span `request_start` opened, with the request's outcome."""
    tracer = _Installed.tracer
    if handle is not None and tracer is not None:
        tracer.request_end(handle, facts)


def headers_inject(headers: dict[str, str]) -> None:
    """Add the current span's W3C `traceparent` (and `tracestate`) to outgoing headers."""
    tracer = _Installed.tracer
    if tracer is not None:
        tracer.inject(headers)


def current_annotate(attributes: Mapping[str, str | int]) -> None:
    """Set attributes on the current span (a management API call's request id, its workspace)."""
    tracer = _Installed.tracer
    if tracer is not None:
        tracer.current_annotate(attributes)
