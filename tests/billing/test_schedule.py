"""The retry schedule: published steps, jitter bounds, Retry-After clamping, exhaustion."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from billing.schedule import RETRY_STEPS, retry_after_parse, retry_delay
from tests.billing.conftest import NoJitter

NOW = datetime(2026, 5, 5, 12, 0, tzinfo=UTC)


def test_without_jitter_the_delays_are_the_published_schedule() -> None:
    delays = [retry_delay(attempts=n, rng=NoJitter()) for n in range(1, 10)]

    assert [d.total_seconds() for d in delays if d] == [
        5,
        300,
        1800,
        7200,
        18000,
        36000,
        50400,
        72000,
        86400,
    ]


def test_every_jittered_delay_stays_within_twenty_percent_of_its_step() -> None:
    rng = random.Random(7)

    delays = [(n, retry_delay(attempts=n, rng=rng)) for n in range(1, 10) for _ in range(200)]

    for n, delay in delays:
        assert delay is not None
        assert 0.8 * RETRY_STEPS[n - 1] <= delay.total_seconds() <= 1.2 * RETRY_STEPS[n - 1]
    assert len({d for _, d in delays}) > 100


def _schedule(rng: random.Random) -> list[float]:
    """Times of the ten tries (seconds after the first), each made the moment it is due."""
    times = [0.0]
    for n in range(1, len(RETRY_STEPS) + 1):
        delay = retry_delay(attempts=n, since_first=times[-1], rng=rng)
        assert delay is not None
        times.append(times[-1] + delay.total_seconds())
    return times


def test_jitter_does_not_accumulate_and_the_schedule_outlasts_a_three_day_outage() -> None:
    rng = random.Random(11)
    nominal = [float(sum(RETRY_STEPS[:n])) for n in range(len(RETRY_STEPS) + 1)]

    runs = [_schedule(rng) for _ in range(500)]

    for times in runs:
        for n in range(1, len(times)):
            step = RETRY_STEPS[n - 1]
            assert abs(times[n] - nominal[n]) <= 0.2 * step + 1e-6
            assert times[n] - times[n - 1] >= 0.8 * step - 1e-6
        assert times[-1] >= nominal[-1] > 72 * 3600
    assert len({round(times[-1]) for times in runs}) > 100


def test_a_late_try_keeps_at_least_most_of_a_step_before_the_next() -> None:
    delay = retry_delay(attempts=3, since_first=10 * 3600, rng=NoJitter())

    assert delay == timedelta(seconds=0.8 * 1800)


def test_after_the_tenth_failure_there_is_no_next_attempt() -> None:
    assert retry_delay(attempts=10) is None


def test_retry_after_is_honoured_within_one_to_two_steps() -> None:
    assert retry_delay(attempts=2, retry_after=450) == timedelta(seconds=450)
    assert retry_delay(attempts=2, retry_after=10) == timedelta(seconds=300)
    assert retry_delay(attempts=2, retry_after=86400) == timedelta(seconds=600)


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    http_date = format_datetime(NOW + timedelta(seconds=120), usegmt=True)

    assert retry_after_parse("120", now=NOW) == 120
    assert retry_after_parse(http_date, now=NOW) == 120
    assert retry_after_parse("soon", now=NOW) is None
    assert retry_after_parse(None, now=NOW) is None
