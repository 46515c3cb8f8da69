"""The group usage API's reads of today's DAY counters."""

from __future__ import annotations

import pytest

from routing.admission import limits_admit, limits_settle
from routing.usage_read import group_usage_read
from tests.limits.support import T0, rate, run, usage

pytestmark = pytest.mark.usefixtures("limits_backend")
RESET_AT = "2026-11-24T00:00:00Z"


def test_usage_is_null_before_the_first_request_of_the_day() -> None:
    enforced = {"acme/llama": [usage("TOKEN", 1000), rate("REQUEST", "MINUTE", 5)]}

    body = group_usage_read(group=None, enforced=enforced, now=T0)

    assert body == {
        "acme/llama": [
            {
                "type": "TOKEN",
                "unit": "DAY",
                "threshold": 1000,
                "current_usage": None,
                "reset_at": None,
            }
        ]
    }


def test_usage_reports_todays_counter_and_the_next_midnight() -> None:
    limits = [usage("TOKEN", 1000), usage("REQUEST", 10)]
    admission = run(limits_admit(limits=limits, reserve_tokens=300, slug="acme/llama", now=T0))
    assert admission.reservation is not None
    run(limits_settle(reservation=admission.reservation, actual_tokens=120, now=T0))

    body = group_usage_read(group=None, enforced={"acme/llama": limits}, now=T0 + 5)

    assert body["acme/llama"] == [
        {
            "type": "TOKEN",
            "unit": "DAY",
            "threshold": 1000,
            "current_usage": 120,
            "reset_at": RESET_AT,
        },
        {
            "type": "REQUEST",
            "unit": "DAY",
            "threshold": 10,
            "current_usage": 1,
            "reset_at": RESET_AT,
        },
    ]


def test_usage_of_a_cascading_chain_shows_the_counter_with_least_room() -> None:
    pool = usage("REQUEST", 3, group="grp_root")
    run(limits_admit(limits=[pool], reserve_tokens=0, slug="acme/llama", now=T0))
    run(limits_admit(limits=[pool], reserve_tokens=0, slug="acme/llama", now=T0))

    body = group_usage_read(
        group=None, enforced={"acme/llama": [usage("REQUEST", 2), pool]}, now=T0
    )

    assert body["acme/llama"] == [
        {"type": "REQUEST", "unit": "DAY", "threshold": 3, "current_usage": 2, "reset_at": RESET_AT}
    ]


def test_usage_reads_the_redis_clock_by_default() -> None:
    limits = [usage("REQUEST", 10)]
    run(limits_admit(limits=limits, reserve_tokens=0, slug="acme/llama"))

    body = group_usage_read(group=None, enforced={"acme/llama": limits})

    assert body["acme/llama"][0]["current_usage"] == 1
    assert body["acme/llama"][0]["reset_at"].endswith("T00:00:00Z")
