"""Circuit breakers of upstream targets, shared by every worker and node through Redis.

A breaker opens after GATEWAY_CIRCUIT_FAILURES consecutive failures before the first byte, stays
open for GATEWAY_CIRCUIT_COOLDOWN seconds, then lets one probe through (claimed atomically in
Redis): the probe's success closes it, its failure opens it for another cooldown.

Cost on a healthy path: a worker keeps each breaker's state for GATEWAY_CIRCUIT_STATE_TTL seconds
and reads the states of an endpoint's targets in one pipelined round trip when its copy is older;
a success writes only when the breaker had counted failures. Failures and probe claims run
circuit.lua. Without Redis every breaker reads as closed: requests go on, unprotected.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from redis.exceptions import RedisError

from gateway_project.kernel.hot_settings import hot
from routing.circuit_state import (
    CLOSED,
    FIELDS,
    KEY_PREFIX,
    STATE_VALUES,
    CircuitState,
    circuit_parse,
)
from routing.metrics import circuit_state, circuit_transitions, count
from routing.redis_pool import main_redis
from routing.targets import ResolvedTarget

logger = logging.getLogger("gateway.circuit")
SCRIPT = Path(__file__).with_name("circuit.lua").read_text()
# A breaker nobody touched for a day is forgotten (its endpoint may be gone).
KEY_LIFETIME_MS = 86_400_000
# As logs and metric labels name them.
STATE_NAMES = {"closed": "closed", "open": "open", "half": "half_open"}


_cache: dict[str, tuple[float, CircuitState]] = {}


def circuit_reset() -> None:
    """Forget this process's copies (tests)."""
    _cache.clear()


def circuit_key(target: ResolvedTarget) -> str:
    """The Redis key of a target's breaker."""
    return KEY_PREFIX + target.circuit


def _label(target: ResolvedTarget) -> str:
    return f"{target.provider}#{target.position}"


def _remember(target: ResolvedTarget, state: CircuitState, *, slug: str) -> None:
    _cache[target.circuit] = (time.monotonic(), state)
    circuit_state.labels(slug, _label(target)).set(STATE_VALUES[state.state])


def circuit_states_known(targets: tuple[ResolvedTarget, ...]) -> list[CircuitState] | None:
    """The breakers of `targets` from this worker's copies, None when one is missing or old."""
    ttl, now, cache = hot.GATEWAY_CIRCUIT_STATE_TTL, time.monotonic(), _cache
    states = []
    for target in targets:
        copy = cache.get(target.circuit)
        if not _fresh(copy, now, ttl):
            return None
        states.append(copy[1])  # type: ignore[index]  # fresh: not None
    return states


def _fresh(copy: tuple[float, CircuitState] | None, now: float, ttl: float) -> bool:
    """Whether a worker's copy of a breaker may still be used (younger than `ttl`)."""
    return copy is not None and now - copy[0] < ttl


async def circuit_states(targets: tuple[ResolvedTarget, ...], *, slug: str) -> list[CircuitState]:
    """The breakers of `targets`, from this worker's copies or one pipelined read."""
    known = circuit_states_known(targets)
    if known is not None:
        return known
    ttl, now = hot.GATEWAY_CIRCUIT_STATE_TTL, time.monotonic()
    stale = [t for t in targets if not _fresh(_cache.get(t.circuit), now, ttl)]
    if stale:
        rows: list[Any] = [[None] * len(FIELDS)] * len(stale)
        try:
            pipe = main_redis().pipeline(transaction=False)
            for target in stale:
                pipe.hmget(circuit_key(target), FIELDS)
            rows = await pipe.execute()
        except (RedisError, OSError):
            logger.warning("circuit breakers unreadable, targets treated as closed", exc_info=True)
        for target, row in zip(stale, rows, strict=True):
            _remember(target, circuit_parse(row), slug=slug)
    return [_cache[t.circuit][1] for t in targets]


async def _run(target: ResolvedTarget, op: str, *, slug: str, lease: float = 0.0) -> str | None:
    """circuit.lua on one breaker: the state after, None when Redis failed (logged)."""
    now_ms = int(time.time() * 1000)
    args: list[str | int] = [
        op,
        now_ms,
        settings.GATEWAY_CIRCUIT_FAILURES,
        int(settings.GATEWAY_CIRCUIT_COOLDOWN * 1000),
        int(lease * 1000),
        KEY_LIFETIME_MS,
    ]
    try:
        after, before = await main_redis().eval(SCRIPT, 1, circuit_key(target), *args)
    except (RedisError, OSError):
        logger.warning("circuit breaker not updated", exc_info=True)
        return None
    after, before = after.decode(), before.decode()
    if after != before and after in STATE_VALUES:
        _transition(target, before, after, slug=slug)
    return str(after)


def _transition(target: ResolvedTarget, before: str, after: str, *, slug: str) -> None:
    old, new = STATE_NAMES.get(before, before), STATE_NAMES[after]
    count(circuit_transitions, (slug, _label(target), new))
    logger.warning(
        "circuit breaker %s -> %s",
        old,
        new,
        extra={"slug": slug, "target": _label(target), "from": old, "to": new},
    )


async def circuit_failure(target: ResolvedTarget, *, slug: str) -> None:
    """Count a failure before the first byte (it may open the breaker)."""
    after = await _run(target, "fail", slug=slug)
    now = time.time()
    if after == "open":
        until = now + settings.GATEWAY_CIRCUIT_COOLDOWN
        _remember(target, CircuitState("open", 0, until, now), slug=slug)
    elif after is not None:
        _remember(target, CircuitState(after, 1, 0.0, now), slug=slug)


async def circuit_success(target: ResolvedTarget, *, slug: str) -> None:
    """The target answered: a breaker with failures counted closes (no write otherwise)."""
    copy = _cache.get(target.circuit)
    if copy is None or copy[1] == CLOSED:
        return
    if await _run(target, "ok", slug=slug) is not None:
        _remember(target, CLOSED, slug=slug)


async def circuit_probe(target: ResolvedTarget, *, slug: str, lease: float) -> bool:
    """Claim the one probe of an open breaker past its cooldown; False when another has it."""
    after = await _run(target, "probe", slug=slug, lease=lease)
    if after == "half":
        _remember(target, CircuitState("half", 0, 0.0, 0.0, time.time() + lease), slug=slug)
        return True
    # Not ours: look again on the next request rather than trust an old copy.
    _cache.pop(target.circuit, None)
    return after is None
