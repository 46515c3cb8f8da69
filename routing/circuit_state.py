"""A circuit breaker's state as Redis holds it (routing/circuit.lua), read by the proxy and by
the admin; kept apart from routing/circuit.py so reading it loads no metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

KEY_PREFIX = "gw:circuit:"
# The hash fields: state, consecutive failures, open until (ms), last failure (ms), probe lease
# end (ms).
FIELDS = ("s", "f", "u", "l", "p")
STATE_VALUES = {"closed": 0, "open": 1, "half": 2}


@dataclass(frozen=True, slots=True)
class CircuitState:
    """One breaker as a worker last saw it; times in epoch seconds."""

    state: str = "closed"
    failures: int = 0
    open_until: float = 0.0
    last_failure: float = 0.0
    probe_lease: float = 0.0

    def passable(self) -> bool:
        """Closed: requests go through without asking Redis."""
        return self.state == "closed"

    def probe_due(self, now: float) -> bool:
        """Open past its cooldown (or a probe's lease ran out): one request may claim the probe."""
        ripe = self.state == "half" or (self.state == "open" and now >= self.open_until)
        return ripe and now >= self.probe_lease


CLOSED = CircuitState()


def circuit_describe(client: Any, *, names: list[str], now: float | None = None) -> list[str]:
    """The breakers named `names` as staff read them ("closed", "open for 7 s", ...), read with
    a synchronous Redis client (the admin)."""
    clock = time.time() if now is None else now
    try:
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.hmget(KEY_PREFIX + name, FIELDS)
        states = [circuit_parse(row) for row in pipe.execute()]
    except (RedisError, OSError):
        return ["unknown (Redis unreachable)"] * len(names)
    return [_describe(state, clock) for state in states]


def _describe(state: CircuitState, now: float) -> str:
    if state.state == "open" and now < state.open_until:
        return f"open for {state.open_until - now:.0f} s more"
    if state.state != "closed":
        return "half-open (one probe allowed)"
    return f"closed, {state.failures} failure(s) in a row" if state.failures else "closed"


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def circuit_parse(row: list[Any]) -> CircuitState:
    """A breaker hash (HMGET of s, f, u, l, p) as a CircuitState."""
    state = row[0].decode() if isinstance(row[0], bytes) else "closed"
    if state not in STATE_VALUES:
        return CLOSED
    failures, until, last, lease = (_number(value) for value in row[1:])
    return CircuitState(state, int(failures), until / 1000, last / 1000, lease / 1000)
