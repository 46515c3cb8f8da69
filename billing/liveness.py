"""Liveness notes of the billing pipeline, kept in Redis where every node and the admin read them.

- Heartbeats: beat notes each time it publishes `billing.heartbeat`; the worker notes each time it
  runs it (and once when it starts). A stale note means that process is down or stuck.
- Steps: each step of the beat (ingest, batching, lease reclaim, enqueue, quarantine gauges) notes
  its last success, and its last failure with the error, so a step that fails on every beat while
  the task itself "succeeds" is visible.

Writing a note never fails the caller: a note that cannot be written shows up as a stale one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from django_redis import get_redis_connection

HEARTBEATS_KEY = "gw:billing:heartbeats"
STEPS_KEY = "gw:billing:steps"
BEAT = "beat"
WORKER = "worker"
ERROR_MAX = 500
logger = logging.getLogger(__name__)


def _client() -> Any:
    return get_redis_connection("default")


def heartbeat_note(*, role: str, at: float | None = None) -> None:
    """Note that the Celery `role` (beat or worker) is alive now."""
    try:
        _client().hset(HEARTBEATS_KEY, role, at if at is not None else time.time())
    except Exception:  # noqa: BLE001 - a heartbeat must never break the task it rides on
        logger.warning("billing heartbeat of %s not written", role, exc_info=True)


def step_note(*, step: str, error: str | None = None, at: float | None = None) -> None:
    """Note a step's success, or its failure with `error`."""
    now = at if at is not None else time.time()
    mapping: dict[str, Any] = {f"{step}:ok": now}
    if error is not None:
        mapping = {f"{step}:failed": now, f"{step}:error": error[:ERROR_MAX]}
    try:
        _client().hset(STEPS_KEY, mapping=mapping)
    except Exception:  # noqa: BLE001 - the step's own outcome matters more than its note
        logger.warning("billing step note of %s not written", step, exc_info=True)


@dataclass(frozen=True)
class StepState:
    """A step's last success and last failure (epoch seconds) and that failure's error."""

    ok_at: float | None = None
    failed_at: float | None = None
    error: str = ""

    @property
    def failing(self) -> bool:
        """Its latest outcome is a failure."""
        return self.failed_at is not None and (self.ok_at is None or self.failed_at > self.ok_at)


@dataclass(frozen=True)
class Notes:
    """Everything noted, as read at once."""

    heartbeats: dict[str, float] = field(default_factory=dict)
    steps: dict[str, StepState] = field(default_factory=dict)


def notes_read() -> Notes:
    """The heartbeats and step states (raises when Redis cannot be read)."""
    pipe = _client().pipeline(transaction=False)
    pipe.hgetall(HEARTBEATS_KEY)
    pipe.hgetall(STEPS_KEY)
    beats, steps = pipe.execute()
    heartbeats = {k.decode(): float(v) for k, v in beats.items()}
    raw = {k.decode(): v.decode() for k, v in steps.items()}
    names = {key.rsplit(":", 1)[0] for key in raw}
    return Notes(
        heartbeats=heartbeats,
        steps={
            name: StepState(
                ok_at=_float(raw.get(f"{name}:ok")),
                failed_at=_float(raw.get(f"{name}:failed")),
                error=raw.get(f"{name}:error", ""),
            )
            for name in sorted(names)
        },
    )


def _float(value: str | None) -> float | None:
    return float(value) if value is not None else None


def ingest_lag_seconds(*, stream: str, now: float | None = None) -> float:
    """How long the oldest usage event not yet stored has waited in the stream (0 when none).

    Ingest deletes each entry once its row is committed, so the stream's first entry is the
    oldest one still waiting; its id carries the millisecond it was added."""
    first = _client().xrange(stream, count=1)
    if not first:
        return 0.0
    entry_id = first[0][0]
    added_ms = int((entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")[0])
    return max(0.0, (now if now is not None else time.time()) - added_ms / 1000)
