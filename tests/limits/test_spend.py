"""SPEND limits: micro-units of the endpoint's currency, reserved at admission prices, settled to
the actual cost, INDEPENDENT and CASCADING like TOKEN limits, exact up to 2**53 - 1."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from billing.models import UsageEvent
from billing.services.ingest import usage_ingest
from groups.limits import SPEND_MAX_THRESHOLD
from groups.models import Group, Workspace
from groups.selectors import EnforcedLimit, group_enforced_limits
from groups.services import group_create
from groups.services.audit import SYSTEM_ACTOR
from keys.services import api_key_create
from routing.admission import Admission, limits_admit, limits_settle
from routing.pricing import micro_ceil
from routing.services import endpoint_create
from routing.usage_read import group_usage_read
from tests.fakes.model_server import FakeModelServerThread
from tests.limits.support import T0, counters_snapshot, run
from tests.proxy.conftest import GatewayThread, compatible_target
from tests.waiting import wait_until

SLUG = "acme/llama"
PRICING = {"currency": "USD", "input_per_million": "1", "output_per_million": "1"}


def spend(threshold: int, *, unit: str = "DAY", group: str = "grp_child") -> EnforcedLimit:
    return EnforcedLimit(group, "grp_root", "USAGE", "SPEND", unit, threshold)


def admit(limits: list[EnforcedLimit], *, micro: int | None, now: float = T0) -> Admission:
    return run(
        limits_admit(limits=limits, reserve_tokens=1, slug=SLUG, reserve_spend=micro, now=now)
    )


def test_spend_reservations_fill_the_limit_then_429_naming_it() -> None:
    limits = [spend(1000)]

    results = [admit(limits, micro=300) for _ in range(4)]

    assert [r.allowed for r in results] == [True, True, True, False]
    rejected = results[-1]
    assert rejected.error_type == "usage_limit_error"
    assert rejected.message == (
        "Usage limit exceeded for model 'acme/llama': "
        "SPEND limit of 1000 micro-units per day (UTC)."
    )
    assert rejected.retry_after is not None
    assert "x-ratelimit-limit-tokens" not in rejected.headers


def test_a_reservation_above_the_spend_limit_never_fits_and_is_not_retried() -> None:
    admission = admit([spend(1000)], micro=1001)

    assert not admission.allowed
    assert admission.retry_after is None
    assert admission.headers["x-should-retry"] == "false"
    assert admission.message is not None and "needs 1001 micro-units" in admission.message
    assert counters_snapshot() == {}


def test_a_spend_limit_on_a_model_without_a_price_admits_nothing() -> None:
    admission = admit([spend(1000)], micro=None)

    assert not admission.allowed
    assert admission.retry_after is None
    assert counters_snapshot() == {}


def test_all_or_nothing_with_the_other_limits() -> None:
    tokens = EnforcedLimit("grp_child", "grp_root", "USAGE", "TOKEN", "DAY", 5)
    limits = [tokens, spend(1000)]

    refused = run(
        limits_admit(limits=limits, reserve_tokens=6, slug=SLUG, reserve_spend=10, now=T0)
    )

    assert not refused.allowed
    assert counters_snapshot() == {}


def test_settle_moves_the_spend_counter_to_the_actual_cost() -> None:
    limits = [spend(1000)]
    admission = admit(limits, micro=900)
    assert admission.reservation is not None

    run(limits_settle(reservation=admission.reservation, actual_tokens=1, actual_spend=120, now=T0))

    assert list(counters_snapshot().values()) == [b"120"]
    assert admit(limits, micro=880).allowed
    assert not admit(limits, micro=1).allowed


def test_counters_stay_exact_integers_up_to_2_pow_53_minus_1() -> None:
    limits = [spend(SPEND_MAX_THRESHOLD)]

    first = admit(limits, micro=SPEND_MAX_THRESHOLD - 1)
    second = admit(limits, micro=1)
    third = admit(limits, micro=1)
    huge = admit(limits, micro=10**30)

    assert first.allowed and second.allowed and not third.allowed
    assert list(counters_snapshot().values()) == [str(SPEND_MAX_THRESHOLD).encode()]
    assert not huge.allowed and huge.retry_after is None


def test_a_huge_settle_is_written_as_an_integer() -> None:
    limits = [spend(SPEND_MAX_THRESHOLD)]
    admission = admit(limits, micro=1)
    assert admission.reservation is not None

    run(
        limits_settle(
            reservation=admission.reservation, actual_tokens=1, actual_spend=10**15, now=T0
        )
    )

    assert list(counters_snapshot().values()) == [str(10**15).encode()]


# Through the services: group trees and a real gateway.


@pytest.fixture
def priced(workspace: Workspace) -> Any:
    endpoint_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        slug=SLUG,
        targets=[compatible_target("http://127.0.0.1:9/v1")],
        pricing=PRICING,
    )


def _group(workspace: Workspace, name: str, threshold: int, **kw: Any) -> Group:
    limit = {"type": "SPEND", "unit": "DAY", "threshold": threshold}
    return group_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        external_entity_id=name,
        models=[{"slug": SLUG, "usage_limits": [limit]}],
        **kw,
    )


def _admitted(group: Group, *, count: int, micro: int) -> int:
    limits = group_enforced_limits(group=group)[SLUG]

    async def go() -> int:
        results = [
            await limits_admit(
                limits=limits, reserve_tokens=1, slug=SLUG, reserve_spend=micro, now=T0
            )
            for _ in range(count)
        ]
        return sum(admission.allowed for admission in results)

    return run(go())


@pytest.mark.usefixtures("priced")
def test_a_cascading_parent_spend_pool_caps_two_children(workspace: Workspace) -> None:
    parent = _group(workspace, "parent", 1000, limit_enforcement="CASCADING")
    first = _group(workspace, "first", 800, parent_group_id=parent.id)
    second = _group(workspace, "second", 800, parent_group_id=parent.id)

    from_first = _admitted(first, count=10, micro=100)
    from_second = _admitted(second, count=10, micro=100)

    assert (from_first, from_second) == (8, 2)
    usage = group_usage_read(group=parent, enforced=group_enforced_limits(group=parent), now=T0)
    assert usage[SLUG][0]["current_usage"] == 1000


@pytest.mark.usefixtures("priced")
def test_an_independent_parent_spend_limit_is_each_child_s_own(workspace: Workspace) -> None:
    parent = _group(workspace, "parent", 1000)
    first = group_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        external_entity_id="first",
        models=[{"slug": SLUG}],
        parent_group_id=parent.id,
    )
    second = group_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        external_entity_id="second",
        models=[{"slug": SLUG}],
        parent_group_id=parent.id,
    )

    assert (_admitted(first, count=12, micro=100), _admitted(second, count=12, micro=100)) == (
        10,
        10,
    )


def _priced_key(
    workspace: Workspace, upstream_url: str, *, pricing: dict[str, str], threshold: int
) -> tuple[Group, str]:
    """The endpoint priced at `pricing` on the upstream, a group with a SPEND/DAY limit of
    `threshold` micro-units on it, and a key of that group."""
    endpoint_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        slug=SLUG,
        targets=[compatible_target(upstream_url)],
        pricing=pricing,
    )
    group = _group(workspace, "cust", threshold)
    _, key = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)
    return group, key


def _body(max_tokens: int) -> bytes:
    body = {
        "model": SLUG,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        # Held upstream, so every admission happens before any request settles.
        "fake": {"first_byte_delay_ms": 5000, "tokens": 3},
    }
    return json.dumps(body).encode()


@pytest.mark.django_db(transaction=True)
def test_a_spend_limit_of_1000_micro_usd_admits_exactly_what_fits_at_100_concurrent(
    gateway: GatewayThread, workspace: Workspace
) -> None:
    with FakeModelServerThread() as upstream:
        group, key = _priced_key(workspace, upstream.url, pricing=PRICING, threshold=1000)
        raw = _body(max_tokens=80)
        reserve = len(raw) // 4 + 80  # 1 micro-USD a token, prompt estimate + cap

        async def burst() -> list[int]:
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            limits = httpx.Limits(max_connections=100)
            async with httpx.AsyncClient(timeout=30, limits=limits) as client:
                url = f"{gateway.url}/v1/chat/completions"
                answers = await asyncio.gather(
                    *(client.post(url, content=raw, headers=headers) for _ in range(100))
                )
            return [answer.status_code for answer in answers]

        statuses = asyncio.run(burst())
        fits = 1000 // reserve
        wait_until(
            lambda: usage_ingest() is not None and UsageEvent.objects.count() == fits, timeout=15
        )

    assert statuses.count(200) == fits
    assert statuses.count(429) == 100 - fits
    events = list(UsageEvent.objects.all())
    settled = sum(micro_ceil(e.cost_amount * 1_000_000) for e in events if e.cost_amount)
    assert 0 < settled < fits * reserve
    enforced = group_enforced_limits(group=group)
    wait_until(
        lambda: (
            group_usage_read(group=group, enforced=enforced)[SLUG][0]["current_usage"] == settled
        )
    )


@pytest.mark.django_db(transaction=True)
def test_a_max_tokens_priced_above_the_spend_limit_is_refused_before_the_upstream(
    gateway: GatewayThread, workspace: Workspace
) -> None:
    with FakeModelServerThread() as upstream:
        pricing = {"currency": "USD", "input_per_million": "0", "output_per_million": "1000000"}
        # A limit of a million USD.
        _, key = _priced_key(workspace, upstream.url, pricing=pricing, threshold=10**12)
        body = {"model": SLUG, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**5}

        answer = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={**body, "n": 128},
            headers={"Authorization": f"Bearer {key}"},
        )

        assert answer.status_code == 429
        assert answer.headers["x-should-retry"] == "false"
        assert answer.json()["error"]["code"] == "usage_limit_exceeded"
        assert "SPEND limit" in answer.json()["error"]["message"]
        assert upstream.requests == []
    assert counters_snapshot() == {}
