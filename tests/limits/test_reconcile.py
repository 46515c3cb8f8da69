"""Reconciling reservations to actual usage, and refunds, in the same counters."""

from __future__ import annotations

import pytest

from routing.admission import Admission, Reservation, limits_admit, limits_refund, limits_settle
from tests.limits.support import T0, rate, run, usage

MIDNIGHT = 1795478400.0  # 2026-11-24T00:00:00Z


def admit(limits: list, *, tokens: int, now: float = T0) -> Admission:
    """One admission of `acme/llama` at a given clock."""
    return run(limits_admit(limits=limits, reserve_tokens=tokens, slug="acme/llama", now=now))


def reservation_of(admission: Admission) -> Reservation:
    """The reservation of an admission that must have been admitted."""
    assert admission.reservation is not None
    return admission.reservation


def settle(admission: Admission, *, actual: int, now: float = T0) -> None:
    """Reconcile an admission to its actual token count."""
    run(limits_settle(reservation=reservation_of(admission), actual_tokens=actual, now=now))


def test_settle_gives_back_reserved_tokens_that_were_not_used() -> None:
    limits = [rate("TOKEN", "MINUTE", 1000)]
    admission = admit(limits, tokens=600)

    settle(admission, actual=100)

    assert admit(limits, tokens=901).retry_after == pytest.approx(0.06)
    assert admit(limits, tokens=900).allowed


def test_settle_charges_usage_beyond_the_reservation_even_over_the_limit() -> None:
    limits = [rate("TOKEN", "MINUTE", 1000)]
    admission = admit(limits, tokens=100)

    settle(admission, actual=1500)
    rejected = admit(limits, tokens=1)

    assert rejected.retry_after == pytest.approx(90 + 0.06 - 60)


def test_settle_leaves_request_counters_alone() -> None:
    limits = [rate("REQUEST", "MINUTE", 2), rate("TOKEN", "MINUTE", 1000)]
    admission = admit(limits, tokens=500)

    settle(admission, actual=0)
    second = admit(limits, tokens=1000)
    third = admit(limits, tokens=1)

    assert second.allowed
    assert not third.allowed
    assert third.message is not None and "REQUEST limit of 2" in third.message


def test_settle_adjusts_the_day_counter_that_was_charged() -> None:
    limits = [usage("TOKEN", 1000)]
    admission = admit(limits, tokens=700, now=MIDNIGHT - 1)

    settle(admission, actual=100, now=MIDNIGHT + 1)
    yesterday = admit(limits, tokens=900, now=MIDNIGHT - 0.5)
    today = admit(limits, tokens=1000, now=MIDNIGHT + 2)

    assert yesterday.allowed
    assert yesterday.headers["x-ratelimit-remaining-tokens"] == "0"
    assert today.allowed


def test_refund_gives_back_the_request_and_every_reserved_token() -> None:
    limits = [rate("REQUEST", "MINUTE", 1), rate("TOKEN", "MINUTE", 1000), usage("TOKEN", 1000)]
    admission = admit(limits, tokens=1000)

    run(limits_refund(reservation=reservation_of(admission), now=T0))
    again = admit(limits, tokens=1000)

    assert again.allowed
    assert again.headers["x-ratelimit-remaining-requests"] == "0"


def test_refund_never_credits_more_than_the_burst() -> None:
    limits = [rate("REQUEST", "SECOND", 2)]
    admission = admit(limits, tokens=0)

    run(limits_refund(reservation=reservation_of(admission), now=T0 + 10))
    burst = [admit(limits, tokens=0, now=T0 + 10).allowed for _ in range(3)]

    assert burst == [True, True, False]


def test_day_refund_never_goes_below_zero() -> None:
    limits = [usage("TOKEN", 1000)]
    admission = admit(limits, tokens=10)

    settle(admission, actual=0)
    run(limits_refund(reservation=reservation_of(admission), now=T0))
    over = admit(limits, tokens=1000)
    after = admit(limits, tokens=1)

    assert over.allowed
    assert not after.allowed


def test_settle_and_refund_accept_a_missing_reservation() -> None:
    run(limits_settle(reservation=None, actual_tokens=10))
    run(limits_refund(reservation=None))
