"""Admission on the request path: every limit of a request checked and charged in one Redis script
(routing/limit_counters.py), then settled to the actual usage or refunded.

A cost above a threshold (or a threshold of 0) can never fit: 429 with retry_after None and
`x-should-retry: false`.

Response headers (OpenAI names) describe, per type, the counter with the least room left:
`x-ratelimit-limit-*` its threshold, `-remaining-*` what is left after this request, `-reset-*` the
time until it is full again, formatted like OpenAI/Go durations ("20ms", "1.5s", "6m0s", "1h2m3s").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from gateway_project.kernel.errors import GatewayError
from gateway_project.kernel.hot_settings import hot
from routing.adjust_retry import adjust_retry_start
from routing.limit_counters import (
    CALENDAR_UNITS,
    LUA_INT_MAX,
    PERIOD_US,
    UNAVAILABLE,
    ChargedCounter,
    LimitsUnavailable,
    counter_group,
    counter_key,
    script_call,
    script_run,
)

if TYPE_CHECKING:
    from groups.selectors import EnforcedLimit

logger = logging.getLogger(__name__)

UNIT_TEXT = {
    "SECOND": "per second",
    "MINUTE": "per minute",
    "DAY": "per day (UTC)",
    "MONTH": "per month (UTC)",
}
HEADER_NAMES = (("REQUEST", "requests"), ("TOKEN", "tokens"))
NEED_TEXT = {"REQUEST": "1 request", "TOKEN": "{cost} tokens", "SPEND": "{cost} micro-units"}


@dataclass(frozen=True, slots=True)
class Reservation:
    """What an admitted request charged: handed back to limits_settle or limits_refund."""

    counters: tuple[ChargedCounter, ...]
    reserved_tokens: int
    reserved_spend: int = 0  # micro-units, SPEND counters only


@dataclass(frozen=True, slots=True)
class Admission:
    """The outcome of limits_admit; retry_after None on a rejection means it can never fit."""

    allowed: bool
    error_type: str | None = None
    message: str | None = None
    retry_after: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    reservation: Reservation | None = None
    # The limit that rejected: its type (request, token) and unit (minute, day, ...).
    limit_type: str = ""
    limit_unit: str = ""
    # Its threshold and the group it is set on (an ancestor's, under CASCADING).
    limit_threshold: int = 0
    limit_group: str = ""

    def error(self) -> GatewayError:
        """The 429 of a rejection (its headers carry Retry-After or x-should-retry)."""
        usage_kind = self.error_type == "usage_limit_error"
        return GatewayError(
            self.message or "Limit exceeded.",
            status=429,
            type=self.error_type or "rate_limit_error",
            code="usage_limit_exceeded" if usage_kind else "rate_limit_exceeded",
            headers=dict(self.headers),
        )


@dataclass(frozen=True, slots=True)
class _CounterState:
    counter: ChargedCounter
    fits: int  # 1 fits, 0 fits later, -1 never fits
    wait_us: int
    remaining: int
    reset_us: int


def reset_format(microseconds: int) -> str:
    """A duration the way OpenAI's x-ratelimit-reset-* headers show it ("20ms", "6m0s")."""
    ms = math.ceil(microseconds / 1000)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    return f"{minutes}m{seconds}" if minutes else seconds


async def limits_admit(
    *,
    limits: Sequence[EnforcedLimit],
    reserve_tokens: int,
    slug: str,
    now: float | None = None,
    reserve_spend: int | None = None,
) -> Admission:
    """Check every limit of a request and charge all of them, or none (now: test clock, seconds).

    `reserve_spend` is what SPEND limits reserve, in micro-units; None (a model without a price,
    or a caller that priced nothing) is admitted by no SPEND limit: spend is never unmetered."""
    if not limits:
        return Admission(allowed=True)
    plan = _plan(limits, slug)
    costs = plan.costs(reserve_tokens=reserve_tokens, reserve_spend=reserve_spend)
    args: list[Any] = ["admit", "" if now is None else str(round(now * 1_000_000))]
    for (period, threshold), cost in zip(plan.args, costs, strict=True):
        args += (period, threshold, max(-LUA_INT_MAX, min(LUA_INT_MAX, cost)))
    try:
        reply = await script_call(keys=plan.keys, args=args)
    except UNAVAILABLE as exc:
        return _admit_unavailable(exc)
    if reply[0] == 1:
        return plan.admitted(
            reply=reply,
            costs=costs,
            reserved_tokens=reserve_tokens,
            reserved_spend=reserve_spend or 0,
        )
    counters = [
        replace(counter, cost=cost) for counter, cost in zip(plan.counters, costs, strict=True)
    ]
    states = _states(reply, counters)
    return _rejection(states=states, headers=_rate_headers(states), slug=slug)


class _Plan:
    """What admitting one limit set for one slug needs beyond the request's costs, built once:
    the counters' keys, the script's fixed ARGV, the rate-limit headers' counters per type."""

    def __init__(self, limits: Sequence[EnforcedLimit], slug: str) -> None:
        self.limits = limits
        self.members = tuple(limits)
        self.counters = tuple(
            _counter(limit=limit, slug=slug, reserve_tokens=0, reserve_spend=0) for limit in limits
        )
        self.keys = [counter.key for counter in self.counters]
        self.args = [(PERIOD_US[counter.unit], counter.threshold) for counter in self.counters]
        self.types = tuple(counter.type for counter in self.counters)
        self.headers = tuple(
            (
                f"x-ratelimit-limit-{name}",
                f"x-ratelimit-remaining-{name}",
                f"x-ratelimit-reset-{name}",
                [i for i, c in enumerate(self.counters) if c.type == type_],
            )
            for type_, name in HEADER_NAMES
            if type_ in self.types
        )
        # The charged keys of the current UTC day: one tuple, swapped whole.
        self._period: tuple[str | None, tuple[str, ...]] = (None, ())

    def current(self, limits: Sequence[EnforcedLimit]) -> bool:
        """Whether this plan was built from these very limits (a list is mutable)."""
        members = self.members
        return (
            self.limits is limits
            and len(limits) == len(members)
            and all(a is b for a, b in zip(limits, members, strict=True))
        )

    def costs(self, *, reserve_tokens: int, reserve_spend: int | None) -> list[int]:
        """What each counter is charged, as `_counter` computes it."""
        costs = []
        for type_, counter in zip(self.types, self.counters, strict=True):
            if type_ == "REQUEST":
                costs.append(1)
            elif type_ == "SPEND":
                spend = counter.threshold + 1 if reserve_spend is None else reserve_spend
                costs.append(int(spend))
            else:
                costs.append(int(reserve_tokens))
        return costs

    def admitted(
        self, *, reply: list[Any], costs: list[int], reserved_tokens: int, reserved_spend: int
    ) -> Admission:
        """The admission of a reply that charged every counter."""
        day = reply[2].decode() if isinstance(reply[2], bytes) else str(reply[2])
        period_day, keys = self._period
        if day != period_day:
            keys = tuple(_period_key(counter, day=day).key for counter in self.counters)
            self._period = (day, keys)
        charged = tuple(
            ChargedCounter(key, c.type, c.unit, c.threshold, cost)
            for key, c, cost in zip(keys, self.counters, costs, strict=True)
        )
        reservation = Reservation(charged, reserved_tokens, reserved_spend)
        return Admission(allowed=True, headers=self._rate_headers(reply), reservation=reservation)

    def _rate_headers(self, reply: list[Any]) -> dict[str, str]:
        headers: dict[str, str] = {}
        counters = self.counters
        for limit_name, remaining_name, reset_name, indexes in self.headers:
            # _rate_headers' choice: least remaining, then lowest threshold, then longest reset.
            best = indexes[0]
            if len(indexes) > 1:
                best = min(
                    indexes,
                    key=lambda i: (
                        int(reply[5 + 4 * i]),
                        counters[i].threshold,
                        -int(reply[6 + 4 * i]),
                    ),
                )
            headers[limit_name] = str(counters[best].threshold)
            headers[remaining_name] = str(int(reply[5 + 4 * best]))
            headers[reset_name] = reset_format(int(reply[6 + 4 * best]))
        return headers


_plans: dict[tuple[int, str], _Plan] = {}
# Limit sets come from the key cache, rebuilt when the configuration changes: past this many,
# the plans of replaced sets are dropped all at once.
_PLANS_MAX = 4096


def _plan(limits: Sequence[EnforcedLimit], slug: str) -> _Plan:
    plan = _plans.get((id(limits), slug))
    if plan is None or not plan.current(limits):
        if len(_plans) >= _PLANS_MAX:
            _plans.clear()
        plan = _plans[id(limits), slug] = _Plan(limits, slug)
    return plan


async def limits_settle(
    *,
    reservation: Reservation | None,
    actual_tokens: int,
    now: float | None = None,
    actual_spend: int = 0,
) -> None:
    """Reconcile the TOKEN and SPEND counters to the actual usage (may go over a limit; never
    fails); `actual_spend` in whole micro-units, rounded up."""
    if reservation is None:
        return
    counters, amounts = settle_changes(
        reservation=reservation, actual_tokens=actual_tokens, actual_spend=actual_spend
    )
    await _adjust(counters=counters, amounts=amounts, now=now)


def settle_changes(
    *, reservation: Reservation, actual_tokens: int, actual_spend: int
) -> tuple[list[ChargedCounter], list[int]]:
    """The counters a settle to the actual usage changes, and by how much."""
    deltas = {
        "TOKEN": actual_tokens - reservation.reserved_tokens,
        "REQUEST": 0,
        "SPEND": actual_spend - reservation.reserved_spend,
    }
    return _changes(reservation, deltas)


async def limits_refund(*, reservation: Reservation | None, now: float | None = None) -> None:
    """Give back the request count, tokens and spend reserved by a request that produced nothing."""
    if reservation is None:
        return
    deltas = {
        "TOKEN": -reservation.reserved_tokens,
        "REQUEST": -1,
        "SPEND": -reservation.reserved_spend,
    }
    await _adjust(*_changes(reservation, deltas), now=now)


def _counter(
    *, limit: EnforcedLimit, slug: str, reserve_tokens: int, reserve_spend: int | None
) -> ChargedCounter:
    if limit.type == "REQUEST":
        cost = 1
    elif limit.type == "SPEND":
        # No price (it was removed under a live limit): can never fit, rather than spend unmetered.
        cost = int(limit.threshold) + 1 if reserve_spend is None else reserve_spend
    else:
        cost = reserve_tokens
    return ChargedCounter(
        key=counter_key(limit=limit, slug=slug),
        type=limit.type,
        unit=limit.unit,
        threshold=int(limit.threshold),
        cost=int(cost),
    )


def _admit_unavailable(exc: BaseException) -> Admission:
    if hot.GATEWAY_LIMITS_FAIL_OPEN:
        logger.warning("Limits Redis unreachable, admitting without limits (fail open): %r", exc)
        return Admission(allowed=True)
    logger.error("Limits Redis unreachable, rejecting (fail closed): %r", exc)
    raise LimitsUnavailable(
        "Rate limiting is temporarily unavailable; retry shortly.", headers={"Retry-After": "1"}
    ) from exc


def _states(reply: list[Any], counters: list[ChargedCounter]) -> list[_CounterState]:
    return [
        _CounterState(counter, *(int(value) for value in reply[3 + 4 * i : 7 + 4 * i]))
        for i, counter in enumerate(counters)
    ]


def _period_key(counter: ChargedCounter, *, day: str) -> ChargedCounter:
    """The counter with the full key the script charged: `:YYYYMMDD` (DAY), `:YYYYMM` (MONTH)."""
    if counter.unit == "DAY":
        return replace(counter, key=f"{counter.key}:{day}")
    if counter.unit == "MONTH":
        return replace(counter, key=f"{counter.key}:{day[:6]}")
    return counter


def _rejection(*, states: list[_CounterState], headers: dict[str, str], slug: str) -> Admission:
    failing = [state for state in states if state.fits != 1]
    worst = max(failing, key=lambda state: math.inf if state.fits == -1 else state.wait_us)
    retry_after = None if worst.fits == -1 else worst.wait_us / 1_000_000
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    else:
        # Retrying cannot help; the OpenAI SDKs retry every 429 unless told not to.
        headers["x-should-retry"] = "false"
    usage = worst.counter.unit in CALENDAR_UNITS
    return Admission(
        allowed=False,
        error_type="usage_limit_error" if usage else "rate_limit_error",
        message=_rejection_message(state=worst, slug=slug),
        retry_after=retry_after,
        headers=headers,
        limit_type=worst.counter.type.lower(),
        limit_unit=worst.counter.unit.lower(),
        limit_threshold=worst.counter.threshold,
        limit_group=counter_group(worst.counter.key),
    )


def _rejection_message(*, state: _CounterState, slug: str) -> str:
    counter = state.counter
    amount = f"{counter.threshold} micro-units" if counter.type == "SPEND" else counter.threshold
    limit = f"{counter.type} limit of {amount} {UNIT_TEXT[counter.unit]}"
    if state.fits == -1:
        need = NEED_TEXT[counter.type].format(cost=counter.cost)
        return f"This request can never fit the {limit} for model '{slug}': it needs {need}."
    kind = "Usage" if counter.unit in CALENDAR_UNITS else "Rate"
    return f"{kind} limit exceeded for model '{slug}': {limit}."


def _rate_headers(states: list[_CounterState]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for type_, name in HEADER_NAMES:
        of_type = [state for state in states if state.counter.type == type_]
        if not of_type:
            continue
        tightest = min(of_type, key=lambda s: (s.remaining, s.counter.threshold, -s.reset_us))
        headers[f"x-ratelimit-limit-{name}"] = str(tightest.counter.threshold)
        headers[f"x-ratelimit-remaining-{name}"] = str(tightest.remaining)
        headers[f"x-ratelimit-reset-{name}"] = reset_format(tightest.reset_us)
    return headers


def _changes(
    reservation: Reservation, deltas: dict[str, int]
) -> tuple[list[ChargedCounter], list[int]]:
    counters = [c for c in reservation.counters if deltas[c.type] != 0]
    return counters, [deltas[counter.type] for counter in counters]


async def _adjust(counters: list[ChargedCounter], amounts: list[int], *, now: float | None) -> None:
    if not counters:
        return
    try:
        await script_run(mode="adjust", counters=counters, amounts=amounts, now=now)
    except UNAVAILABLE as exc:
        # The response is out; the adjustment is not lost with Redis: retry it in the background.
        logger.warning("Limits Redis unreachable, counters reconciled later: %r", exc)
        adjust_retry_start(counters=counters, amounts=amounts, now=now)
