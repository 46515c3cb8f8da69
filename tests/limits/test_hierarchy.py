"""Exactness and all-or-nothing charging across group trees, on one Redis and on a Redis Cluster."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time

import pytest
from pytest_django.fixtures import Settings

from routing.admission import Admission, limits_admit, limits_refund
from routing.redis_pool import limits_redis
from tests.limits.support import T0, counters_snapshot, rate, run, usage

pytestmark = pytest.mark.usefixtures("limits_backend")


async def _admit_many(limits: list, *, count: int, now: float | None = T0) -> list[Admission]:
    calls = [
        limits_admit(limits=limits, reserve_tokens=10, slug="acme/llama", now=now)
        for _ in range(count)
    ]
    return await asyncio.gather(*calls)


def test_concurrent_requests_admit_exactly_the_threshold() -> None:
    limits = [rate("REQUEST", "MINUTE", 100)]

    admissions = run(_admit_many(limits, count=500))

    assert sum(admission.allowed for admission in admissions) == 100


def test_concurrent_requests_on_the_real_clock_never_exceed_threshold_plus_refill() -> None:
    limits = [rate("REQUEST", "MINUTE", 100)]

    started = time.monotonic()

    admissions = run(_admit_many(limits, count=500, now=None))

    # GCRA refills one request every 0.6 s: the only admissions allowed beyond the burst.
    refills = math.ceil((time.monotonic() - started) / 0.6)
    assert 100 <= sum(admission.allowed for admission in admissions) <= 100 + refills


def test_token_limit_under_concurrency_is_never_exceeded() -> None:
    limits = [rate("TOKEN", "MINUTE", 1000)]

    admissions = run(_admit_many(limits, count=300))

    assert sum(admission.allowed for admission in admissions) * 10 == 1000


def test_child_with_room_under_exhausted_cascading_parent_is_rejected_and_charged_nothing() -> None:
    parent = rate("REQUEST", "MINUTE", 2, group="grp_root")
    sibling = [rate("REQUEST", "MINUTE", 10, group="grp_sibling"), parent]
    child = [
        rate("REQUEST", "MINUTE", 10),
        rate("TOKEN", "MINUTE", 10_000),
        usage("TOKEN", 100_000),
        parent,
    ]
    run(_admit_many(sibling, count=2))
    before = counters_snapshot()

    admission = run(limits_admit(limits=child, reserve_tokens=10, slug="acme/llama", now=T0))

    assert not admission.allowed
    assert admission.reservation is None
    assert counters_snapshot() == before
    assert not any(b":grp_child:" in key for key in before)


def test_cascading_parent_pool_is_never_exceeded_by_the_sum_of_its_children() -> None:
    pool = rate("REQUEST", "MINUTE", 50, group="grp_root")
    finance = [rate("REQUEST", "MINUTE", 40, group="grp_finance"), pool]
    engineering = [rate("REQUEST", "MINUTE", 40, group="grp_engineering"), pool]

    async def both() -> tuple[list[Admission], list[Admission]]:
        return await asyncio.gather(
            _admit_many(finance, count=100), _admit_many(engineering, count=100)
        )

    finance_result, engineering_result = run(both())

    admitted_finance = sum(a.allowed for a in finance_result)
    admitted_engineering = sum(a.allowed for a in engineering_result)
    assert admitted_finance + admitted_engineering == 50
    assert admitted_finance <= 40 and admitted_engineering <= 40


def test_independent_groups_spend_their_own_counters_only() -> None:
    alice = [rate("REQUEST", "MINUTE", 3, group="grp_alice")]
    bob = [rate("REQUEST", "MINUTE", 3, group="grp_bob")]
    run(_admit_many(alice, count=3))

    blocked = run(limits_admit(limits=alice, reserve_tokens=1, slug="acme/llama", now=T0))
    admitted = run(_admit_many(bob, count=3))

    assert not blocked.allowed
    assert all(admission.allowed for admission in admitted)


def test_counters_are_separate_per_slug() -> None:
    limits = [rate("REQUEST", "MINUTE", 1)]
    run(limits_admit(limits=limits, reserve_tokens=1, slug="acme/llama", now=T0))

    other = run(limits_admit(limits=limits, reserve_tokens=1, slug="acme/mistral", now=T0))

    assert other.allowed


def test_refund_gives_the_whole_chain_back() -> None:
    pool = rate("REQUEST", "MINUTE", 1, group="grp_root")
    chain = [rate("REQUEST", "MINUTE", 1), usage("TOKEN", 500), pool]
    first = run(limits_admit(limits=chain, reserve_tokens=500, slug="acme/llama", now=T0))

    run(limits_refund(reservation=first.reservation, now=T0))
    again = run(limits_admit(limits=chain, reserve_tokens=500, slug="acme/llama", now=T0))

    assert first.allowed and again.allowed


def test_script_is_reloaded_after_the_server_forgets_it() -> None:
    limits = [rate("REQUEST", "MINUTE", 10)]
    run(limits_admit(limits=limits, reserve_tokens=1, slug="acme/llama", now=T0))

    async def flush_then_admit() -> Admission:
        await limits_redis().script_flush()
        return await limits_admit(limits=limits, reserve_tokens=1, slug="acme/llama", now=T0)

    admission = run(flush_then_admit())

    assert admission.allowed
    assert admission.headers["x-ratelimit-remaining-requests"] == "8"


@pytest.mark.slow
def test_four_processes_together_admit_exactly_the_threshold(settings: Settings) -> None:
    env = {**os.environ, "GATEWAY_LIMITS_REDIS_URL": settings.GATEWAY_LIMITS_REDIS_URL}
    command = [sys.executable, "-m", "tests.limits.admit_worker", "150", "100"]
    workers = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(4)
    ]

    outputs = [worker.communicate(timeout=60)[0] for worker in workers]

    assert all(worker.returncode == 0 for worker in workers)
    assert sum(int(output.strip().splitlines()[-1]) for output in outputs) == 100
