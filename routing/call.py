"""The record of one inference request: what the proxy learns while serving it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from routing.authcache import KeyEntry
from routing.pricing import Pricing
from routing.usage import Usage


@dataclass(slots=True)
class Call:
    """What the proxy learns about one request, for the usage event, metrics and the log line."""

    request_id: str
    path: str
    # The route: chat, completions, embeddings, responses, models, model.
    kind: str = ""
    started: float = field(default_factory=time.perf_counter)
    entry: KeyEntry | None = None
    slug: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    status: int = 0
    error_code: str | None = None
    target: str = ""
    usage: Usage | None = None
    event_status: str | None = None
    upstream_ms: float = 0.0
    first_byte_ms: float | None = None
    stream: bool = False
    # The endpoint's prices when the request was admitted: its event and SPEND settle use them.
    pricing: Pricing | None = None

    def elapsed_ms(self) -> float:
        """Milliseconds since the request arrived."""
        return (time.perf_counter() - self.started) * 1000
