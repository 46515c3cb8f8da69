"""Window behaviour with a controlled clock: GCRA rate limits and UTC calendar-day usage limits."""

from __future__ import annotations

import pytest

from routing.admission import Admission, limits_admit
from routing.redis_pool import limits_redis
from tests.limits.support import T0, rate, run, usage

MIDNIGHT = 1795478400.0  # 2026-11-24T00:00:00Z


def admit(limits: list, *, now: float, tokens: int = 1) -> Admission:
    """One admission at a given clock."""
    return run(limits_admit(limits=limits, reserve_tokens=tokens, slug="acme/llama", now=now))


def test_no_burst_at_a_minute_boundary() -> None:
    limits = [rate("REQUEST", "MINUTE", 100)]
    before_edge = T0 + 0.999  # 11:59:59.999
    burst = [admit(limits, now=before_edge) for _ in range(100)]

    after_edge = admit(limits, now=T0 + 1.001)  # 12:00:00.001, a fixed window would reset here

    assert all(admission.allowed for admission in burst)
    assert not after_edge.allowed
    assert after_edge.retry_after == pytest.approx(0.6 - 0.002)


def test_refill_timing_matches_retry_after() -> None:
    limits = [rate("REQUEST", "SECOND", 5)]
    for _ in range(5):
        admit(limits, now=T0)
    rejected = admit(limits, now=T0 + 0.05)
    assert rejected.retry_after is not None

    too_early = admit(limits, now=T0 + 0.05 + rejected.retry_after - 0.001)
    on_time = admit(limits, now=T0 + 0.05 + rejected.retry_after)

    assert rejected.retry_after == pytest.approx(0.15)
    assert not too_early.allowed
    assert on_time.allowed


def test_token_cost_is_weighted_and_refills_in_proportion() -> None:
    limits = [rate("TOKEN", "MINUTE", 1000)]
    admit(limits, now=T0, tokens=600)

    rejected = admit(limits, now=T0, tokens=600)
    later = admit(limits, now=T0 + 12, tokens=600)

    assert rejected.retry_after == pytest.approx(12.0)
    assert later.allowed


def test_burst_capacity_is_the_threshold_with_fractional_intervals() -> None:
    limits = [rate("REQUEST", "SECOND", 7)]

    results = [admit(limits, now=T0).allowed for _ in range(8)]

    assert results == [True] * 7 + [False]


def test_day_limit_resets_at_midnight_utc() -> None:
    limits = [usage("REQUEST", 2)]
    admit(limits, now=MIDNIGHT - 10)
    admit(limits, now=MIDNIGHT - 5)

    rejected = admit(limits, now=MIDNIGHT - 1)
    next_day = admit(limits, now=MIDNIGHT)

    assert not rejected.allowed
    assert rejected.error_type == "usage_limit_error"
    assert rejected.retry_after == pytest.approx(1.0)
    assert next_day.allowed


def test_day_counters_live_on_calendar_day_keys_that_expire_the_day_after() -> None:
    limits = [usage("TOKEN", 1000)]

    admission = admit(limits, now=MIDNIGHT - 3600, tokens=40)

    assert admission.reservation is not None
    (counter,) = admission.reservation.counters
    assert counter.key == "rl:{grp_root}:grp_child:acme/llama:TOKEN:DAY:20261123"

    async def ttl() -> int:
        return int(await limits_redis().pttl(counter.key))

    assert 3600_000 < run(ttl()) <= (3600 + 86400) * 1000
