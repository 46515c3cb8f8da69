"""The attempt plan of a request: order by strategy, breakers, first-byte timeouts."""

from __future__ import annotations

import random
from typing import Any

from routing.balancing import attempt_plan
from routing.circuit_state import CLOSED, CircuitState
from routing.targets import ResolvedEndpoint, ResolvedTarget

NOW = 1_000_000.0


def _endpoint(*weights: int, **fields: Any) -> ResolvedEndpoint:
    targets = tuple(
        ResolvedTarget(i, "OPENAI_COMPATIBLE", f"http://10.0.0.{i}/v1", "m", None, weight=w)
        for i, w in enumerate(weights)
    )
    return ResolvedEndpoint("ep_1", "ws_1", "acme/llama", "UNRESTRICTED", targets, **fields)


def _positions(plan: list[Any]) -> list[int]:
    return [attempt.target.position for attempt in plan]


def test_priority_keeps_the_listed_order_and_skips_open_breakers(settings: Any) -> None:
    settings.GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT = 60
    settings.GATEWAY_UPSTREAM_FALLBACK_FIRST_BYTE_TIMEOUT = 20
    opened = CircuitState("open", 0, NOW + 5, NOW - 1)

    plan = attempt_plan(_endpoint(1, 1, 1), [CLOSED, opened, CLOSED], now=NOW)

    assert _positions(plan) == [0, 2]
    assert [a.timeout for a in plan] == [20, 60]
    assert not any(a.probe for a in plan)


def test_an_open_breaker_past_its_cooldown_is_a_probe(settings: Any) -> None:
    ripe = CircuitState("open", 0, NOW - 1, NOW - 11)

    plan = attempt_plan(_endpoint(1, 1), [ripe, CLOSED], now=NOW)

    assert [(a.target.position, a.probe) for a in plan] == [(0, True), (1, False)]


def test_when_every_breaker_is_open_the_least_recently_failed_is_tried() -> None:
    states = [
        CircuitState("open", 0, NOW + 5, NOW - 1),
        CircuitState("open", 0, NOW + 5, NOW - 3),
        CircuitState("half", 0, 0, NOW - 2, NOW + 30),
    ]

    plan = attempt_plan(_endpoint(1, 1, 1), states, now=NOW)

    assert _positions(plan) == [1]


def test_weighted_draws_the_first_target_by_weight() -> None:
    rng = random.Random(7)
    endpoint = _endpoint(3, 1, strategy="WEIGHTED")

    firsts = [
        attempt_plan(endpoint, [CLOSED, CLOSED], now=NOW, rng=rng)[0].target.position
        for _ in range(4000)
    ]

    assert 0.72 <= firsts.count(0) / 4000 <= 0.78


def test_an_endpoint_timeout_applies_to_every_attempt(settings: Any) -> None:
    settings.GATEWAY_UPSTREAM_FALLBACK_FIRST_BYTE_TIMEOUT = 20

    plan = attempt_plan(_endpoint(1, 1, first_byte_timeout=90.0), [CLOSED, CLOSED], now=NOW)

    assert [a.timeout for a in plan] == [90.0, 90.0]
