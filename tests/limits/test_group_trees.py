"""Group hierarchies: groups made by the service, counters from group_enforced_limits."""

from __future__ import annotations

from typing import Any

import pytest

from groups.models import Group, Workspace
from groups.selectors import group_enforced_limits
from groups.services import group_create
from groups.services.audit import SYSTEM_ACTOR
from routing.admission import limits_admit
from routing.usage_read import group_usage_read
from tests.limits.support import T0, run

SLUG = "acme/llama"
pytestmark = pytest.mark.usefixtures("limits_backend")


@pytest.fixture
def new_group(workspace: Workspace) -> Any:
    """Create a group on the live endpoint `acme/llama` with `TYPE/UNIT: threshold` limits."""
    from routing.models import Endpoint

    Endpoint.objects.create(workspace=workspace, slug=SLUG)

    def create(
        name: str, limits: dict[str, int], *, parent: Group | None = None, **kw: Any
    ) -> Group:
        rates = [_limit(key, value) for key, value in limits.items() if not key.endswith("DAY")]
        usages = [_limit(key, value) for key, value in limits.items() if key.endswith("DAY")]
        return group_create(
            workspace=workspace,
            actor=SYSTEM_ACTOR,
            external_entity_id=name,
            models=[{"slug": SLUG, "rate_limits": rates, "usage_limits": usages}],
            parent_group_id=parent.id if parent else None,
            **kw,
        )

    return create


def _limit(key: str, threshold: int) -> dict[str, Any]:
    type_, unit = key.split("/")
    return {"type": type_, "unit": unit, "threshold": threshold}


def admitted(group: Group, *, count: int) -> int:
    """How many of `count` sequential requests of `group` are admitted."""
    limits = group_enforced_limits(group=group)[SLUG]

    async def go() -> int:
        results = [
            await limits_admit(limits=limits, reserve_tokens=10, slug=SLUG, now=T0)
            for _ in range(count)
        ]
        return sum(admission.allowed for admission in results)

    return run(go())


def test_finance_and_engineering_share_the_org_pool(new_group: Any) -> None:
    org = new_group("org", {"REQUEST/MINUTE": 10}, limit_enforcement="CASCADING")
    finance = new_group("finance", {"REQUEST/MINUTE": 8}, parent=org)
    engineering = new_group("engineering", {"REQUEST/MINUTE": 8}, parent=org)

    by_finance = admitted(finance, count=20)
    by_engineering = admitted(engineering, count=20)

    assert (by_finance, by_engineering) == (8, 2)


def test_independent_child_inherits_the_limit_but_spends_its_own_counter(new_group: Any) -> None:
    org = new_group("org", {"REQUEST/MINUTE": 3})
    team = new_group("team", {}, parent=org)
    assert admitted(org, count=5) == 3

    by_team = admitted(team, count=5)

    assert by_team == 3


def test_usage_read_of_a_group_shows_its_day_counters(new_group: Any) -> None:
    org = new_group("org", {"TOKEN/DAY": 1000, "REQUEST/MINUTE": 5})
    admitted(org, count=2)

    body = group_usage_read(group=org, enforced=group_enforced_limits(group=org), now=T0)

    assert body == {
        SLUG: [
            {
                "type": "TOKEN",
                "unit": "DAY",
                "threshold": 1000,
                "current_usage": 20,
                "reset_at": "2026-11-24T00:00:00Z",
            }
        ]
    }
