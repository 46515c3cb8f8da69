"""Effective models (what the API shows) and enforced limits (what the limiter charges)."""

from __future__ import annotations

from typing import Any

from groups.models import Group, Workspace
from groups.selectors import (
    EnforcedLimit,
    group_chain,
    group_effective_models,
    group_enforced_limits,
    group_list,
    groups_models_wire,
)
from tests.groups.conftest import GroupFactory, model


def _limit(type_: str, unit: str, threshold: int, source: Group) -> dict[str, Any]:
    return {"type": type_, "unit": unit, "threshold": threshold, "source_group": source.id}


def test_root_effective_models_are_its_own_in_configured_slug_order(
    make_group: GroupFactory,
) -> None:
    group = make_group(
        [
            model("acme/qwen", usage={"TOKEN/DAY": 9}),
            model("acme/llama", rate={"REQUEST/SECOND": 1}),
        ]
    )

    effective = group_effective_models(group=group)

    assert effective == [
        {
            "slug": "acme/qwen",
            "rate_limits": [],
            "usage_limits": [_limit("TOKEN", "DAY", 9, group)],
        },
        {
            "slug": "acme/llama",
            "rate_limits": [_limit("REQUEST", "SECOND", 1, group)],
            "usage_limits": [],
        },
    ]


def test_independent_child_inherits_each_missing_limit_from_the_nearest_ancestor(
    make_group: GroupFactory,
) -> None:
    root = make_group(
        [model(rate={"TOKEN/MINUTE": 1000, "REQUEST/MINUTE": 100}, usage={"TOKEN/DAY": 10**6})]
    )
    middle = make_group([model(rate={"REQUEST/MINUTE": 50})], parent=root)
    leaf = make_group([model(rate={"TOKEN/MINUTE": 2000})], parent=middle)

    effective = group_effective_models(group=leaf)

    assert effective == [
        {
            "slug": "acme/llama",
            "rate_limits": [
                _limit("TOKEN", "MINUTE", 2000, leaf),
                _limit("REQUEST", "MINUTE", 50, middle),
            ],
            "usage_limits": [_limit("TOKEN", "DAY", 10**6, root)],
        }
    ]


def test_independent_limits_of_another_unit_are_inherited_alongside(
    make_group: GroupFactory,
) -> None:
    root = make_group([model(rate={"TOKEN/SECOND": 10})])
    child = make_group([model(rate={"TOKEN/MINUTE": 300})], parent=root)

    rate = group_effective_models(group=child)[0]["rate_limits"]

    assert rate == [_limit("TOKEN", "SECOND", 10, root), _limit("TOKEN", "MINUTE", 300, child)]


def test_cascading_shows_the_tightest_limit_of_the_chain_with_its_source(
    make_group: GroupFactory,
) -> None:
    root = make_group(
        [model(rate={"TOKEN/MINUTE": 1000, "REQUEST/MINUTE": 10}, usage={"REQUEST/DAY": 500})],
        limit_enforcement="CASCADING",
    )
    middle = make_group([model(rate={"TOKEN/MINUTE": 400})], parent=root)
    leaf = make_group([model(rate={"REQUEST/MINUTE": 5, "TOKEN/SECOND": 3})], parent=middle)

    effective = group_effective_models(group=leaf)

    assert effective[0]["rate_limits"] == [
        _limit("TOKEN", "SECOND", 3, leaf),
        _limit("TOKEN", "MINUTE", 400, middle),
        _limit("REQUEST", "MINUTE", 5, leaf),
    ]
    assert effective[0]["usage_limits"] == [_limit("REQUEST", "DAY", 500, root)]


def test_child_shows_only_its_own_slugs(make_group: GroupFactory) -> None:
    root = make_group([model("acme/llama"), model("acme/qwen", rate={"TOKEN/MINUTE": 1})])

    child = make_group([model("acme/llama")], parent=root)

    assert [m["slug"] for m in group_effective_models(group=child)] == ["acme/llama"]


def test_independent_enforced_limits_count_on_the_group_itself(make_group: GroupFactory) -> None:
    root = make_group([model(rate={"TOKEN/MINUTE": 1000}, usage={"REQUEST/DAY": 9})])
    child = make_group([model(rate={"TOKEN/MINUTE": 5})], parent=root)

    enforced = group_enforced_limits(group=child)

    assert enforced == {
        "acme/llama": [
            EnforcedLimit(child.id, root.id, "RATE", "TOKEN", "MINUTE", 5),
            EnforcedLimit(child.id, root.id, "USAGE", "REQUEST", "DAY", 9),
        ]
    }


def test_cascading_enforced_limits_charge_every_owner_up_the_chain(
    make_group: GroupFactory,
) -> None:
    root = make_group([model(rate={"TOKEN/MINUTE": 1000})], limit_enforcement="CASCADING")
    middle = make_group([model()], parent=root)
    leaf = make_group([model(rate={"TOKEN/MINUTE": 10}, usage={"TOKEN/DAY": 99})], parent=middle)

    enforced = group_enforced_limits(group=leaf)

    assert enforced == {
        "acme/llama": [
            EnforcedLimit(root.id, root.id, "RATE", "TOKEN", "MINUTE", 1000),
            EnforcedLimit(leaf.id, root.id, "RATE", "TOKEN", "MINUTE", 10),
            EnforcedLimit(leaf.id, root.id, "USAGE", "TOKEN", "DAY", 99),
        ]
    }


def test_chain_lists_root_first(make_group: GroupFactory) -> None:
    root = make_group()
    middle = make_group(parent=root)
    leaf = make_group(parent=middle)

    assert [g.id for g in group_chain(group=leaf)] == [root.id, middle.id, leaf.id]


def _page_of_leaves(make_group: GroupFactory, count: int) -> list[str]:
    root = make_group([model(rate={"TOKEN/MINUTE": 100})], limit_enforcement="CASCADING")
    middle = make_group([model()], parent=root)
    return [make_group([model(usage={"TOKEN/DAY": n})], parent=middle).id for n in range(count)]


def _queries_for_page(
    ids: list[str], workspace: Workspace, django_assert_num_queries: Any, expected: int
) -> dict[str, list[dict[str, Any]]]:
    with django_assert_num_queries(expected):
        page = list(group_list(workspace=workspace).filter(id__in=ids))
        return {group_id: wire[1] for group_id, wire in groups_models_wire(groups=page).items()}


def test_bulk_effective_models_take_the_same_queries_for_1_or_20_groups(
    make_group: GroupFactory, workspace: Workspace, django_assert_num_queries: Any
) -> None:
    one = _page_of_leaves(make_group, 1)
    twenty = _page_of_leaves(make_group, 20)

    small = _queries_for_page(one, workspace, django_assert_num_queries, 3)
    large = _queries_for_page(twenty, workspace, django_assert_num_queries, 3)

    assert len(small) == 1 and len(large) == 20
    assert large[twenty[7]][0]["usage_limits"][0]["threshold"] == 7
    assert large[twenty[7]][0]["rate_limits"][0]["threshold"] == 100
