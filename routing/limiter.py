"""Limits engine: every rate and usage counter of a request checked and charged in one Redis script.

SECOND/MINUTE limits use GCRA (one theoretical-arrival-time number per counter): the burst capacity
is the threshold, it refills continuously at threshold/period, so there is no 2x burst at a window
edge, weighted costs and refunds are one addition, and the retry delay is exact. Over any span of
d seconds a counter admits at most threshold + d * threshold / period units. DAY limits are
counters on UTC calendar-day keys (`...:DAY:YYYYMMDD`) that expire the day after.
A cost above a threshold (or a threshold of 0) can never fit: 429 with retry_after None and
`x-should-retry: false`.

Keys: `rl:{<root_group_id>}:<counter_group_id>:<slug>:<TYPE>:<UNIT>`; the root id is the Redis
Cluster hash tag, so a whole group tree lives in one slot and one script sees the whole chain.

Response headers (OpenAI names) describe, per type, the counter with the least room left:
`x-ratelimit-limit-*` its threshold, `-remaining-*` what is left after this request, `-reset-*` the
time until it is full again, formatted like OpenAI/Go durations ("20ms", "1.5s", "6m0s", "1h2m3s").
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import redis
import redis.exceptions as rx
from django.conf import settings
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.cluster import RedisCluster as SyncRedisCluster

from gateway_project.kernel.errors import GatewayError
from routing.redis_pool import CLUSTER_SCHEME, limits_redis

if TYPE_CHECKING:
    from groups.models import Group
    from groups.selectors import EnforcedLimit

logger = logging.getLogger(__name__)

SCRIPT = Path(__file__).with_name("limits_script.lua").read_text()
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
PERIOD_US = {"SECOND": 1_000_000, "MINUTE": 60_000_000, "DAY": 0}
UNIT_TEXT = {"SECOND": "per second", "MINUTE": "per minute", "DAY": "per day (UTC)"}
ERROR_CODES = {
    "rate_limit_error": "rate_limit_exceeded",
    "usage_limit_error": "usage_limit_exceeded",
}
HEADER_NAMES = (("REQUEST", "requests"), ("TOKEN", "tokens"))
# What "Redis is unreachable" looks like from redis-py, single node and cluster, plus our timeout.
UNAVAILABLE = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.ClusterError,
    rx.RedisClusterException,
    TimeoutError,
    OSError,
)


class LimitsUnavailable(GatewayError):
    """The limit counters cannot be reached (503; the proxy fails closed unless told otherwise)."""

    status = 503
    type = "service_unavailable_error"
    code = "limits_unavailable"


@dataclass(frozen=True, slots=True)
class ChargedCounter:
    """One counter a request is (or would be) charged to."""

    key: str
    type: str
    unit: str
    threshold: int
    cost: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """What an admitted request charged: handed back to limits_settle or limits_refund."""

    counters: tuple[ChargedCounter, ...]
    reserved_tokens: int


@dataclass(frozen=True, slots=True)
class Admission:
    """The outcome of limits_admit; retry_after None on a rejection means it can never fit."""

    allowed: bool
    error_type: str | None = None
    message: str | None = None
    retry_after: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    reservation: Reservation | None = None

    @property
    def error_code(self) -> str | None:
        """The limit error code matching error_type."""
        return ERROR_CODES.get(self.error_type or "")

    def error(self) -> GatewayError:
        """The 429 to raise for a rejected admission."""
        return GatewayError(
            self.message or "Limit exceeded.",
            code=self.error_code,
            status=429,
            type=self.error_type,
            headers=self.headers,
        )


@dataclass(frozen=True, slots=True)
class _CounterState:
    counter: ChargedCounter
    fits: int  # 1 fits, 0 fits later, -1 never fits
    wait_us: int
    remaining: int
    reset_us: int


def counter_key(*, limit: EnforcedLimit, slug: str) -> str:
    """The Redis key of one limit's counter (DAY keys get `:YYYYMMDD` appended)."""
    return f"rl:{{{limit.root_group_id}}}:{limit.counter_group_id}:{slug}:{limit.type}:{limit.unit}"


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
) -> Admission:
    """Check every limit of a request and charge all of them, or none (now: test clock, seconds)."""
    if not limits:
        return Admission(allowed=True)
    counters = [_counter(limit=limit, slug=slug, reserve_tokens=reserve_tokens) for limit in limits]
    try:
        reply = await _script_run(mode="admit", counters=counters, amounts=None, now=now)
    except UNAVAILABLE as exc:
        return _admit_unavailable(exc)
    return _admission(reply=reply, counters=counters, slug=slug, reserve_tokens=reserve_tokens)


async def limits_settle(
    *, reservation: Reservation | None, actual_tokens: int, now: float | None = None
) -> None:
    """Reconcile the TOKEN counters to the actual usage (may go over a limit; never fails)."""
    if reservation is None:
        return
    delta = actual_tokens - reservation.reserved_tokens
    await _adjust(reservation=reservation, deltas={"TOKEN": delta, "REQUEST": 0}, now=now)


async def limits_refund(*, reservation: Reservation | None, now: float | None = None) -> None:
    """Give back the request count and the reserved tokens of a request that produced nothing."""
    if reservation is None:
        return
    deltas = {"TOKEN": -reservation.reserved_tokens, "REQUEST": -1}
    await _adjust(reservation=reservation, deltas=deltas, now=now)


def group_usage_read(
    *,
    group: Group | None,
    enforced: Mapping[str, Sequence[EnforcedLimit]],
    now: float | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Per slug, today's usage of the group's effective DAY limits (the usage API's body)."""
    try:
        client = _sync_client()
        clock = now if now is not None else _redis_clock(client)
        day = datetime.fromtimestamp(clock, UTC).date()
        daily = {
            slug: [lim for lim in limits if lim.unit == "DAY"] for slug, limits in enforced.items()
        }
        keys = [
            f"{counter_key(limit=lim, slug=slug)}:{day:%Y%m%d}"
            for slug, limits in daily.items()
            for lim in limits
        ]
        values = iter(client.mget(keys) if keys else [])
    except UNAVAILABLE as exc:
        raise LimitsUnavailable("Usage counters are temporarily unavailable.") from exc
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    reset_at = midnight.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        slug: _usage_rows(limits=limits, values=[next(values) for _ in limits], reset_at=reset_at)
        for slug, limits in daily.items()
    }


def _counter(*, limit: EnforcedLimit, slug: str, reserve_tokens: int) -> ChargedCounter:
    cost = 1 if limit.type == "REQUEST" else reserve_tokens
    return ChargedCounter(
        key=counter_key(limit=limit, slug=slug),
        type=limit.type,
        unit=limit.unit,
        threshold=int(limit.threshold),
        cost=int(cost),
    )


async def _script_run(
    *,
    mode: str,
    counters: Sequence[ChargedCounter],
    amounts: Sequence[int] | None,
    now: float | None,
) -> Any:
    keys = [counter.key for counter in counters]
    args: list[Any] = [mode, "" if now is None else str(round(now * 1_000_000))]
    for index, counter in enumerate(counters):
        amount = counter.cost if amounts is None else amounts[index]
        args += [PERIOD_US[counter.unit], counter.threshold, amount]
    client = limits_redis()
    if not isinstance(client, RedisCluster):
        async with asyncio.timeout(settings.GATEWAY_LIMITS_TIMEOUT):
            return await _evalsha(client, keys=keys, args=args)
    # redis-py's async cluster client raises MaxConnectionsError past 100 connections per node,
    # and races (AttributeError on a half-open connection) when a burst arrives before its
    # slot map is loaded: queue cluster calls at a gate and initialize before each call.
    async with _cluster_gate(client):
        async with asyncio.timeout(settings.GATEWAY_LIMITS_TIMEOUT):
            await client.initialize()
            return await _evalsha(client, keys=keys, args=args)


async def _evalsha(client: Redis | RedisCluster, *, keys: list[str], args: list[Any]) -> Any:
    try:
        return await client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
    except rx.NoScriptError:
        # First use on this server, or after a restart / SCRIPT FLUSH / failover.
        await client.script_load(SCRIPT)
        return await client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)


_cluster_gates: WeakKeyDictionary[RedisCluster, asyncio.Semaphore] = WeakKeyDictionary()


def _cluster_gate(client: RedisCluster) -> asyncio.Semaphore:
    gate = _cluster_gates.get(client)
    if gate is None:
        gate = _cluster_gates[client] = asyncio.Semaphore(settings.GATEWAY_REDIS_POOL_SIZE)
    return gate


def _admit_unavailable(exc: BaseException) -> Admission:
    if settings.GATEWAY_LIMITS_FAIL_OPEN:
        logger.warning("Limits Redis unreachable, admitting without limits (fail open): %r", exc)
        return Admission(allowed=True)
    logger.error("Limits Redis unreachable, rejecting (fail closed): %r", exc)
    raise LimitsUnavailable(
        "Rate limiting is temporarily unavailable; retry shortly.", headers={"Retry-After": "1"}
    ) from exc


def _admission(
    *, reply: list[Any], counters: list[ChargedCounter], slug: str, reserve_tokens: int
) -> Admission:
    day = reply[2].decode() if isinstance(reply[2], bytes) else str(reply[2])
    states = [
        _CounterState(counter, *(int(value) for value in reply[3 + 4 * i : 7 + 4 * i]))
        for i, counter in enumerate(counters)
    ]
    headers = _rate_headers(states)
    if reply[0] == 1:
        charged = tuple(
            replace(c, key=f"{c.key}:{day}") if c.unit == "DAY" else c for c in counters
        )
        reservation = Reservation(counters=charged, reserved_tokens=reserve_tokens)
        return Admission(allowed=True, headers=headers, reservation=reservation)
    return _rejection(states=states, headers=headers, slug=slug)


def _rejection(*, states: list[_CounterState], headers: dict[str, str], slug: str) -> Admission:
    failing = [state for state in states if state.fits != 1]
    worst = max(failing, key=lambda state: math.inf if state.fits == -1 else state.wait_us)
    retry_after = None if worst.fits == -1 else worst.wait_us / 1_000_000
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    else:
        # Retrying cannot help; the OpenAI SDKs retry every 429 unless told not to.
        headers["x-should-retry"] = "false"
    usage = worst.counter.unit == "DAY"
    return Admission(
        allowed=False,
        error_type="usage_limit_error" if usage else "rate_limit_error",
        message=_rejection_message(state=worst, slug=slug),
        retry_after=retry_after,
        headers=headers,
    )


def _rejection_message(*, state: _CounterState, slug: str) -> str:
    counter = state.counter
    limit = f"{counter.type} limit of {counter.threshold} {UNIT_TEXT[counter.unit]}"
    if state.fits == -1:
        need = "1 request" if counter.type == "REQUEST" else f"{counter.cost} tokens"
        return f"This request can never fit the {limit} for model '{slug}': it needs {need}."
    kind = "Usage" if counter.unit == "DAY" else "Rate"
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


async def _adjust(*, reservation: Reservation, deltas: dict[str, int], now: float | None) -> None:
    counters = [c for c in reservation.counters if deltas[c.type] != 0]
    if not counters:
        return
    amounts = [deltas[counter.type] for counter in counters]
    try:
        await _script_run(mode="adjust", counters=counters, amounts=amounts, now=now)
    except UNAVAILABLE as exc:
        # The response is out; the adjustment is not lost with Redis: retry it in the background.
        logger.warning("Limits Redis unreachable, counters reconciled later: %r", exc)
        task = asyncio.get_running_loop().create_task(_adjust_retry(counters, amounts, now))
        _pending_adjustments.add(task)
        task.add_done_callback(_pending_adjustments.discard)


# Background retries of adjustments that failed while the limits Redis was unreachable: backoff
# up to ADJUST_RETRY_CAP seconds between tries, for ADJUST_RETRY_WINDOW seconds in all (a TOKEN
# counter refills within a minute; DAY counters are what these retries protect). A try that timed
# out after Redis ran it is applied again: that error is bounded by the requests in flight at the
# moment Redis went away, as is what Redis itself loses in a crash.
ADJUST_RETRY_FIRST = 0.2
ADJUST_RETRY_CAP = 15.0
ADJUST_RETRY_WINDOW = 900.0
_pending_adjustments: set[asyncio.Task[None]] = set()


async def _adjust_retry(
    counters: list[ChargedCounter], amounts: list[int], now: float | None
) -> None:
    delay, deadline = ADJUST_RETRY_FIRST, time.monotonic() + ADJUST_RETRY_WINDOW
    while time.monotonic() + delay < deadline:
        await asyncio.sleep(delay)
        try:
            await _script_run(mode="adjust", counters=counters, amounts=amounts, now=now)
        except UNAVAILABLE:
            delay = min(delay * 2, ADJUST_RETRY_CAP)
            continue
        logger.info("Limit counters reconciled after Redis returned")
        return
    logger.error(
        "Limit counters not reconciled: Redis unreachable for %.0f s; dropped %s on %s",
        ADJUST_RETRY_WINDOW,
        amounts,
        [counter.key for counter in counters],
    )


def pending_adjustments() -> int:
    """Adjustments of this process waiting for the limits Redis to come back."""
    return len(_pending_adjustments)


async def adjustments_drain(*, timeout: float) -> None:
    """At worker shutdown: give pending adjustments `timeout` seconds, then log what is dropped."""
    if not _pending_adjustments:
        return
    _done, left = await asyncio.wait(set(_pending_adjustments), timeout=timeout)
    for task in left:
        task.cancel()
    if left:
        logger.error("Worker stopping with %d limit adjustments not reconciled", len(left))


_sync_clients: dict[str, redis.Redis | SyncRedisCluster] = {}


def _sync_client() -> redis.Redis | SyncRedisCluster:
    url = settings.GATEWAY_LIMITS_REDIS_URL
    client = _sync_clients.get(url)
    if client is None:
        timeout = settings.GATEWAY_LIMITS_TIMEOUT
        if url.startswith(CLUSTER_SCHEME):
            client = SyncRedisCluster.from_url(
                "redis://" + url.removeprefix(CLUSTER_SCHEME), socket_timeout=timeout
            )
        else:
            client = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        _sync_clients[url] = client
    return client


def limits_adjust_sync(*, counters: Sequence[ChargedCounter], amounts: Sequence[int]) -> None:
    """The adjust step from synchronous code (Celery): add `amounts` to `counters`."""
    client = _sync_client()
    args: list[Any] = ["adjust", ""]
    for counter, amount in zip(counters, amounts, strict=True):
        args += [PERIOD_US[counter.unit], counter.threshold, amount]
    keys = [counter.key for counter in counters]
    try:
        client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
    except rx.NoScriptError:
        client.script_load(SCRIPT)
        client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)


def _redis_clock(client: redis.Redis | SyncRedisCluster) -> float:
    seconds, microseconds = client.time()
    return seconds + microseconds / 1_000_000


def _usage_rows(
    *, limits: list[EnforcedLimit], values: list[bytes | str | None], reset_at: str
) -> list[dict[str, Any]]:
    # CASCADING chains can hold several counters per (type, unit): show the one with least room.
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for limit, value in zip(limits, values, strict=True):
        usage = None if value is None else int(value)
        row = {
            "type": limit.type,
            "unit": limit.unit,
            "threshold": int(limit.threshold),
            "current_usage": usage,
            "reset_at": None if usage is None else reset_at,
        }
        current = best.get((limit.type, limit.unit))
        if current is None or _room(row) < _room(current):
            best[(limit.type, limit.unit)] = row
    return list(best.values())


def _room(row: dict[str, Any]) -> tuple[int, int]:
    return row["threshold"] - (row["current_usage"] or 0), row["threshold"]
