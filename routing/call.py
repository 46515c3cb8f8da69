"""What one inference request leaves for its metrics, log line and span, filled in by the proxy
from what each step returned."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from routing.authcache import KeyEntry
from routing.usage import Usage


@dataclass(slots=True)
class Call:
    """The facts of one request, for metrics, the log line and its span."""

    request_id: str
    path: str
    # The route: chat, completions, embeddings, responses, models, model.
    kind: str = ""
    started: float = field(default_factory=time.perf_counter)
    entry: KeyEntry | None = None
    slug: str = ""
    status: int = 0
    error_code: str | None = None
    target: str = ""
    usage: Usage | None = None
    event_status: str | None = None
    upstream_ms: float = 0.0
    first_byte_ms: float | None = None
    stream: bool = False

    def elapsed_ms(self) -> float:
        """Milliseconds since the request arrived."""
        return (time.perf_counter() - self.started) * 1000
