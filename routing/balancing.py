"""Which targets a request tries, in what order, and how long each may take to start answering.

PRIORITY keeps the endpoint's order; WEIGHTED draws the order at random, each target ahead of the
others in proportion to its weight. Either way targets whose breaker is open are left out while
any other can be tried; when every breaker is open, only the least recently failed is tried.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from gateway_project.kernel.hot_settings import hot
from routing.circuit_state import CircuitState
from routing.models import Strategy
from routing.targets import ResolvedEndpoint, ResolvedTarget

_RNG = random.Random()


@dataclass(frozen=True, slots=True)
class Attempt:
    """One target to try; `probe`: claim its breaker's probe first (skip it when taken)."""

    target: ResolvedTarget
    probe: bool
    timeout: float


def first_byte_timeout(endpoint: ResolvedEndpoint, *, last: bool) -> float:
    """The endpoint's own timeout, else the full one for the last target and the shorter
    fallback one for a target with another after it."""
    if endpoint.first_byte_timeout is not None:
        return endpoint.first_byte_timeout
    full = float(hot.GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT)
    return full if last else min(full, hot.GATEWAY_UPSTREAM_FALLBACK_FIRST_BYTE_TIMEOUT)


def _ranked(
    endpoint: ResolvedEndpoint, states: list[CircuitState], rng: random.Random
) -> list[tuple[ResolvedTarget, CircuitState]]:
    pairs = list(zip(endpoint.targets, states, strict=True))
    if endpoint.strategy != Strategy.WEIGHTED or len(pairs) < 2:
        return pairs
    # Efraimidis-Spirakis: sorting by u^(1/w) draws an order without replacement by weight.
    keys = {id(t): rng.random() ** (1.0 / max(1, t.weight)) for t, _ in pairs}
    return sorted(pairs, key=lambda pair: keys[id(pair[0])], reverse=True)


def attempt_plan(
    endpoint: ResolvedEndpoint,
    states: list[CircuitState],
    *,
    now: float | None = None,
    rng: random.Random | None = None,
) -> list[Attempt]:
    """The attempts of one request, in order (never empty for an endpoint with targets)."""
    clock = time.time() if now is None else now
    ranked = _ranked(endpoint, states, rng or _RNG)
    usable = [(t, not s.passable()) for t, s in ranked if s.passable() or s.probe_due(clock)]
    if not usable and ranked:
        target, _ = min(ranked, key=lambda pair: pair[1].last_failure)
        usable = [(target, False)]
    last = len(usable) - 1
    return [
        Attempt(target, probe, first_byte_timeout(endpoint, last=index == last))
        for index, (target, probe) in enumerate(usable)
    ]
