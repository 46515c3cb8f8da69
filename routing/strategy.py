"""An endpoint's `routing` object: how a request picks among its targets, checked and shown."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway_project.kernel.errors import ValidationFailed
from routing.models import Endpoint, Strategy

FIRST_BYTE_TIMEOUT_MAX = 600.0
ROUTING_FIELDS = ("strategy", "first_byte_timeout")


def _invalid(message: str, param: str) -> ValidationFailed:
    return ValidationFailed(message, code="invalid_routing", param=param)


def _timeout_check(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        value = -1
    if not 0 < value <= FIRST_BYTE_TIMEOUT_MAX:
        raise _invalid(
            f"routing.first_byte_timeout must be a number of seconds above 0 and at most "
            f"{FIRST_BYTE_TIMEOUT_MAX:g}, or null.",
            "routing.first_byte_timeout",
        )
    return float(value)


def routing_clean(raw: Any) -> dict[str, Any]:
    """The `routing` object as model fields; a missing field takes its default."""
    if not isinstance(raw, Mapping):
        raise _invalid("routing must be an object.", "routing")
    for name in raw:
        if name not in ROUTING_FIELDS:
            raise _invalid(f"routing.{name} is not a routing field.", f"routing.{name}")
    strategy = raw.get("strategy", Strategy.PRIORITY)
    if strategy not in Strategy.values:
        raise _invalid(
            f"routing.strategy must be one of {', '.join(Strategy.values)}.", "routing.strategy"
        )
    return {
        "strategy": str(strategy),
        "first_byte_timeout": _timeout_check(raw.get("first_byte_timeout")),
    }


def routing_wire(endpoint: Endpoint) -> dict[str, Any]:
    """The API shape of an endpoint's routing."""
    return {"strategy": endpoint.strategy, "first_byte_timeout": endpoint.first_byte_timeout}
