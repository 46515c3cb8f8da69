"""A usage event's timestamp is RFC 3339 UTC with milliseconds, truncated, and a 'Z': the text
datetime.isoformat gives, written without building a datetime for each event."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from billing.services.usage import usage_timestamp


def _isoformat(now: float) -> str:
    stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


@pytest.mark.parametrize(
    "now",
    [
        1_796_422_000.0,  # a whole second
        1_796_422_000.0005,  # under a millisecond: .000
        1_796_422_000.9995,  # the last millisecond of a second: .999, never .1000
        1_796_422_000.123456,
        1_796_421_599.999,  # the second before midnight, then midnight
        1_796_421_600.0,
        1_769_903_999.5,  # a month's last second
        951_782_400.25,  # a leap day
    ],
)
def test_a_timestamp_is_what_isoformat_writes(now: float) -> None:
    assert usage_timestamp(now) == _isoformat(now)


def test_successive_timestamps_follow_the_clock_across_seconds() -> None:
    base = 1_796_422_000.0
    instants = [base + step / 7 for step in range(40)] + [base - 3.5, base + 86_400.25]

    assert [usage_timestamp(now) for now in instants] == [_isoformat(now) for now in instants]


def test_a_timestamp_is_now() -> None:
    before = _isoformat(time.time())

    stamp = usage_timestamp()

    assert before <= stamp <= _isoformat(time.time())
