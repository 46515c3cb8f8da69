"""The admin at a big lab's size, checked at small sizes: no list counts every row, no page's
queries grow with the rows, no form lists every group, workspace or secret in a select, and every
search can be served by an index."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from django.contrib import admin
from django.db import connection, transaction
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from billing.models import UsageEvent
from gateway_project.kernel import admin_paging
from groups.admin import hierarchy
from groups.models import AuditEvent, Group, Secret, Workspace
from keys.models import ApiKey
from routing.services import endpoint_create
from tests.admin.conftest import Grow

CHANGELISTS = (
    "groups_group",
    "groups_auditevent",
    "groups_workspace",
    "groups_orgprefix",
    "groups_customdomain",
    "groups_secret",
    "keys_apikey",
    "keys_managementkey",
    "routing_endpoint",
    "billing_usageevent",
    "billing_webhookdelivery",
    "billing_webhookendpoint",
)


def _changelist(name: str) -> str:
    return reverse(f"admin:{name}_changelist")


def _queries(client: Client, url: str, **params: str) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, params)
    assert response.status_code == 200, url
    return [query["sql"] for query in captured.captured_queries]


def _full_counts(queries: list[str]) -> set[str]:
    return {sql for sql in queries if "COUNT(" in sql.upper() and "LIMIT" not in sql.upper()}


@pytest.mark.parametrize("name", CHANGELISTS)
@pytest.mark.parametrize("params", [{}, {"q": "cust-0"}, {"q": "cust-0", "all": ""}])
def test_no_changelist_counts_every_row(
    admin_client: Client, tenant: Grow, name: str, params: dict[str, str]
) -> None:
    tenant(5)
    # What every admin page counts (the billing banner's partial-index counts) is not the list's.
    every_page = _full_counts(_queries(admin_client, reverse("admin:password_change")))

    queries = _queries(admin_client, _changelist(name), **params)

    assert _full_counts(queries) - every_page == set()


@pytest.mark.parametrize("name", CHANGELISTS)
def test_changelist_queries_do_not_grow_with_the_rows(
    admin_client: Client, tenant: Grow, name: str
) -> None:
    tenant(3)
    few = len(_queries(admin_client, _changelist(name)))

    tenant(30)
    many = len(_queries(admin_client, _changelist(name)))

    assert many == few


def test_a_list_past_the_exact_count_says_it_is_an_estimate(
    admin_client: Client, tenant: Grow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin_paging, "EXACT_COUNT_LIMIT", 5)
    tenant(8)

    unfiltered = admin_client.get(_changelist("groups_group")).content.decode()
    filtered = admin_client.get(_changelist("groups_group"), {"state": "live"}).content.decode()
    small = admin_client.get(_changelist("groups_group"), {"q": "cust-00001"}).content.decode()

    assert re.search(r'id="result-count">(about [\d,]+|more than 5)<', unfiltered)
    assert '<span id="result-count">more than 5</span>' in filtered
    assert '<span id="result-count">1</span>' in small


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner estimate")
def test_an_unfiltered_list_past_the_exact_count_gives_the_tables_estimate(
    admin_client: Client, tenant: Grow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin_paging, "EXACT_COUNT_LIMIT", 5)
    tenant(8)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Group._meta.db_table}")

    html = admin_client.get(_changelist("groups_group")).content.decode()

    # A plain table's estimate: the groups' page links reach past the exact count.
    assert admin_paging.table_estimate(Group.objects.all()) == Group.objects.count()
    assert f'<span id="result-count">about {Group.objects.count()}</span>' in html


class _Selects(HTMLParser):
    """Every <select> of a page: its name and its options' (value, selected)."""

    def __init__(self) -> None:
        super().__init__()
        self.selects: dict[str, list[tuple[str, bool]]] = {}
        self._current: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "select":
            self._current = values.get("name") or ""
            self.selects[self._current] = []
        elif tag == "option" and self._current is not None:
            option = (values.get("value") or "", "selected" in values)
            self.selects[self._current].append(option)

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._current = None


def _listed_rows(html: str, pks: set[str]) -> dict[str, list[str]]:
    """Per select, the rows of `pks` it offers without them being its value."""
    parser = _Selects()
    parser.feed(html)
    found = {
        name: [value for value, selected in options if value in pks and not selected]
        for name, options in parser.selects.items()
    }
    return {name: values for name, values in found.items() if values}


def _form_urls(workspace: Workspace, group: Group, key: ApiKey, endpoint_id: str) -> list[str]:
    return [
        reverse("admin:groups_group_add"),
        reverse("admin:groups_group_change", args=[group.pk]),
        reverse("admin:groups_group_limits", args=[group.pk]),
        reverse("admin:groups_workspace_change", args=[workspace.pk]),
        reverse("admin:groups_orgprefix_add"),
        reverse("admin:groups_customdomain_add"),
        reverse("admin:groups_secret_add"),
        reverse("admin:keys_apikey_add"),
        reverse("admin:keys_apikey_change", args=[key.pk]),
        reverse("admin:keys_managementkey_add"),
        reverse("admin:routing_endpoint_add"),
        reverse("admin:routing_endpoint_change", args=[endpoint_id]),
        reverse("admin:billing_webhookendpoint_add"),
        reverse("admin:billing_webhookdelivery_recover"),
        reverse("admin:billing_usageevent_dashboard") + f"?workspace={workspace.pk}",
        reverse("customer-search") + f"?q={group.external_entity_id[:6]}",
        reverse("customer-page", args=[group.pk]),
    ]


def test_no_form_offers_every_group_workspace_or_secret_in_a_select(
    admin_client: Client, tenant: Grow
) -> None:
    grown = tenant(12)
    for n in range(12):
        other = Workspace.objects.create(name=f"Tenant {n}", onboarded=True)
        Secret.objects.create(workspace=other, name="openai", ciphertext=b"x")
    target = {"provider": "OPENAI_COMPATIBLE", "base_url": "http://127.0.0.1:9/v1"}
    endpoint = endpoint_create(
        workspace=grown.workspace,
        actor="system",
        slug="acme/llama",
        targets=[{**target, "target_model": "m"}],
    )
    pks = {
        *(str(pk) for pk in Group.objects.values_list("pk", flat=True)),
        *(str(pk) for pk in Workspace.objects.values_list("pk", flat=True)),
        *(str(pk) for pk in Secret.objects.values_list("pk", flat=True)),
    }

    listed = {}
    for url in _form_urls(grown.workspace, grown.groups[0], grown.keys[0], endpoint.pk):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        listed[url] = _listed_rows(response.content.decode(), pks)

    assert {url: rows for url, rows in listed.items() if rows} == {}


def test_choosing_a_keys_group_offers_live_groups_by_external_id(
    admin_client: Client, tenant: Grow
) -> None:
    grown = tenant(3)
    Group.objects.filter(pk=grown.groups[1].pk).update(deleted_at=timezone.now())
    params = {"app_label": "keys", "model_name": "apikey", "field_name": "group"}

    found = admin_client.get("/admin/autocomplete/", {**params, "term": "cust-0000"}).json()

    assert [row["id"] for row in found["results"]] == [grown.groups[0].pk, grown.groups[2].pk]


@pytest.mark.parametrize(
    ("name", "term", "expected"),
    [
        ("groups_group", "cust-0000", ["cust-00000", "cust-00001", "cust-00002"]),
        ("groups_group", "CUSTOMER 1", ["cust-00001"]),
        (
            "keys_apikey",
            "sky_0000000",
            ["sky_000000000000", "sky_000000000001", "sky_000000000002"],
        ),
        ("keys_apikey", "cust-00002", ["sky_000000000002"]),
        ("billing_usageevent", "sky_000000000001", ["cust-00001", "sky_000000000001"]),
        ("billing_usageevent", "cust-00002", ["cust-00002", "sky_000000000002"]),
        ("billing_usageevent", "cust-0000", []),
    ],
)
def test_searches_find_by_exact_ids_and_prefixes(
    admin_client: Client, tenant: Grow, name: str, term: str, expected: list[str]
) -> None:
    tenant(3)

    html = admin_client.get(_changelist(name), {"q": term}).content.decode()

    shown = sorted(set(re.findall(r"(cust-\d{5}|sky_\d{12})</(?:a|td)>", html)))
    assert shown == expected


def test_a_search_by_group_id_is_exact(admin_client: Client, tenant: Grow) -> None:
    grown = tenant(2)

    html = admin_client.get(_changelist("groups_group"), {"q": grown.groups[1].pk}).content
    keys = admin_client.get(_changelist("keys_apikey"), {"q": grown.groups[1].pk}).content

    assert b"cust-00001" in html and b"cust-00000" not in html
    assert b"sky_000000000001" in keys and b"sky_000000000000" not in keys


SEARCHES = [
    (Group, "cust-0000"),
    (Group, "Customer 1"),
    (Group, "grp_x"),
    (ApiKey, "sky_0000"),
    (ApiKey, "cust-00001"),
    (UsageEvent, "sky_000000000001"),
    (UsageEvent, "cust-00001"),
    (AuditEvent, "sky_000000000001"),
    (AuditEvent, "cust-00001"),
    (AuditEvent, "mgmt:sky"),
]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner")
@pytest.mark.parametrize(("model", "term"), SEARCHES)
def test_every_search_can_be_served_by_an_index(
    admin_user: Any, tenant: Grow, model: Any, term: str
) -> None:
    tenant(3)
    request = RequestFactory().get("/", {"q": term})
    request.user = admin_user
    model_admin = admin.site._registry[model]
    found, _ = model_admin.get_search_results(request, model_admin.get_queryset(request), term)
    sql, params = found.order_by().query.sql_with_params()

    with transaction.atomic(), connection.cursor() as cursor:
        # With sequential scans priced out, a table still scanned whole has no usable index.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "Seq Scan" not in plan, plan


def test_a_group_with_many_children_links_to_them_instead_of_listing_them(
    admin_client: Client, tenant: Grow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hierarchy, "CHILDREN_SHOWN", 3)
    root = tenant(1).groups[0]
    Group.objects.bulk_create(
        Group(workspace=root.workspace, parent=root, depth=2, external_entity_id=f"child-{n}")
        for n in range(4)
    )

    html = admin_client.get(reverse("admin:groups_group_change", args=[root.pk])).content.decode()
    children = admin_client.get(_changelist("groups_group"), {"parent": root.pk}).content.decode()

    assert len(set(re.findall(r"child-\d", html))) == 3
    assert f"?parent={root.pk}&amp;state=live" in html
    assert set(re.findall(r"child-\d", children)) == {f"child-{n}" for n in range(4)}


def test_workspace_list_counts_live_groups_of_each_workspace(
    admin_client: Client, tenant: Grow, other_workspace: Workspace
) -> None:
    grown = tenant(3)
    Group.objects.filter(pk=grown.groups[0].pk).update(deleted_at=timezone.now())

    html = admin_client.get(_changelist("groups_workspace")).content.decode()

    assert '<td class="field-live_group_count">2</td>' in html
    assert '<td class="field-live_group_count">0</td>' in html


def test_audit_search_matches_the_start_of_an_actor_not_the_middle(
    admin_client: Client, tenant: Grow
) -> None:
    grown = tenant(2)

    start = admin_client.get(_changelist("groups_auditevent"), {"q": "mgmt:sky"}).content
    middle = admin_client.get(_changelist("groups_auditevent"), {"q": "sky_test"}).content

    assert grown.groups[0].pk.encode() in start and grown.groups[1].pk.encode() in start
    assert grown.groups[0].pk.encode() not in middle
