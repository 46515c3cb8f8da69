"""MONTH usage limits: UTC calendar months on a controlled clock, reset at 00:00Z on the 1st."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from groups.selectors import EnforcedLimit
from routing.admission import Admission, limits_admit
from routing.usage_read import group_usage_read
from tests.limits.support import counters_snapshot, run

pytestmark = pytest.mark.usefixtures("limits_backend")
SLUG = "acme/llama"


def at(text: str) -> float:
    """Unix seconds of a UTC moment written 'YYYY-MM-DD HH:MM:SS'."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


def monthly(type_: str, threshold: int) -> EnforcedLimit:
    return EnforcedLimit("grp_child", "grp_root", "USAGE", type_, "MONTH", threshold)


def admit(limits: list[EnforcedLimit], *, now: float, tokens: int = 1, spend: int = 0) -> Admission:
    return run(
        limits_admit(limits=limits, reserve_tokens=tokens, slug=SLUG, reserve_spend=spend, now=now)
    )


def test_a_month_limit_resets_at_new_year() -> None:
    limits = [monthly("REQUEST", 2)]

    admit(limits, now=at("2026-12-01 00:00:00"))
    admit(limits, now=at("2026-12-31 23:00:00"))
    rejected = admit(limits, now=at("2026-12-31 23:59:59"))
    new_year = admit(limits, now=at("2027-01-01 00:00:00"))

    assert not rejected.allowed
    assert rejected.error_type == "usage_limit_error"
    assert rejected.message == (
        "Usage limit exceeded for model 'acme/llama': REQUEST limit of 2 per month (UTC)."
    )
    assert rejected.retry_after == 1.0
    assert new_year.allowed


@pytest.mark.parametrize(
    ("last_day", "first_of_march"),
    [
        ("2027-02-28 23:59:59", "2027-03-01 00:00:00"),
        ("2028-02-29 23:59:59", "2028-03-01 00:00:00"),
    ],
)
def test_a_month_limit_resets_after_the_last_day_of_february(
    last_day: str, first_of_march: str
) -> None:
    limits = [monthly("TOKEN", 100)]

    admit(limits, now=at(last_day[:8] + "01 00:00:00"), tokens=100)
    still_february = admit(limits, now=at(last_day), tokens=1)
    march = admit(limits, now=at(first_of_march), tokens=100)

    assert not still_february.allowed
    assert still_february.retry_after == 1.0
    assert march.allowed


def test_leap_day_belongs_to_february() -> None:
    limits = [monthly("REQUEST", 1)]

    admit(limits, now=at("2028-02-28 12:00:00"))
    leap_day = admit(limits, now=at("2028-02-29 12:00:00"))

    assert not leap_day.allowed


def test_month_counters_live_on_calendar_month_keys_that_expire_a_day_after_the_month() -> None:
    limits = [monthly("SPEND", 1000)]

    admission = admit(limits, now=at("2026-12-31 00:00:00"), spend=250)

    assert admission.reservation is not None
    (key,) = admission.reservation.counters
    assert key.key.endswith(":SPEND:MONTH:202612")
    assert list(counters_snapshot().values()) == [b"250"]


def test_day_and_month_limits_of_one_type_are_both_enforced() -> None:
    limits = [
        EnforcedLimit("grp_child", "grp_root", "USAGE", "REQUEST", "DAY", 2),
        monthly("REQUEST", 3),
    ]

    day_one = [admit(limits, now=at("2027-03-01 10:00:00")).allowed for _ in range(3)]
    day_two = [admit(limits, now=at("2027-03-02 10:00:00")).allowed for _ in range(2)]

    assert day_one == [True, True, False]
    assert day_two == [True, False]


def test_usage_reports_month_limits_with_the_first_of_next_month() -> None:
    limits = [monthly("TOKEN", 100), monthly("SPEND", 5000)]
    admit(limits, now=at("2026-12-15 08:00:00"), tokens=40, spend=1234)

    usage = group_usage_read(group=None, enforced={SLUG: limits}, now=at("2026-12-31 23:59:59"))
    next_month = group_usage_read(
        group=None, enforced={SLUG: limits}, now=at("2027-01-01 00:00:00")
    )

    assert usage == {
        SLUG: [
            {
                "type": "TOKEN",
                "unit": "MONTH",
                "threshold": 100,
                "current_usage": 40,
                "reset_at": "2027-01-01T00:00:00Z",
            },
            {
                "type": "SPEND",
                "unit": "MONTH",
                "threshold": 5000,
                "current_usage": 1234,
                "reset_at": "2027-01-01T00:00:00Z",
            },
        ]
    }
    assert [row["current_usage"] for row in next_month[SLUG]] == [None, None]
