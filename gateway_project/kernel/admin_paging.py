"""Admin lists that stay fast on tables of hundreds of thousands of rows.

Django's changelist counts every matching row (twice, with the unfiltered total) to draw its page
links. Here a count stops at EXACT_COUNT_LIMIT rows; past that, an unfiltered list takes
PostgreSQL's planner estimate of the table's size and a filtered one says "more than" the bound.
A deep page (`?p=500`) finds its rows' keys before joining their columns.
Searches use lookups an index serves, and value filters do not scan the table for their values.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote as url_quote

from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote as admin_quote
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Page, Paginator
from django.db import connections
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext

EXACT_COUNT_LIMIT = 10_000
# What `reverse` leaves unquoted in a path (RFC 3986 sub-delimiters, and "/~:@").
URL_SAFE = "!$&'()*+,;=/~:@"
RECENT_ROWS = 1_000
# Pages starting this deep read their keys before their rows.
DEFERRED_FROM = 1_000


def table_estimate(queryset: QuerySet[Any]) -> int | None:
    """PostgreSQL's estimate of the rows in `queryset`'s table (None elsewhere, or unknown)."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        # A partitioned table's rows are its partitions'; a plain table has no partition tree
        # (pg_partition_tree lists nothing for it), so its own estimate is read.
        table = queryset.model._meta.db_table
        cursor.execute(
            "SELECT coalesce("
            "(SELECT sum(c.reltuples) FROM pg_partition_tree(%s::regclass) t "
            "JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf AND c.reltuples >= 0), "
            "(SELECT c.reltuples FROM pg_class c WHERE c.oid = %s::regclass "
            "AND c.relkind = 'r' AND c.reltuples >= 0))::bigint",
            [table, table],
        )
        row = cursor.fetchone()
    return int(row[0]) if row is not None and row[0] is not None else None


class EstimatedCountPaginator(Paginator):  # type: ignore[type-arg]
    """Counts up to EXACT_COUNT_LIMIT rows exactly; `count_words` says how the count was made."""

    count_words = ""

    @cached_property
    def count(self) -> int:
        rows: QuerySet[Any] = self.object_list  # type: ignore[assignment]
        bounded = rows.order_by()[: EXACT_COUNT_LIMIT + 1].count()
        if bounded <= EXACT_COUNT_LIMIT:
            return bounded
        estimate = None if rows.query.where else table_estimate(rows)
        if estimate is not None and estimate > EXACT_COUNT_LIMIT:
            self.count_words = f"about {estimate:,}"
            return estimate
        self.count_words = f"more than {EXACT_COUNT_LIMIT:,}"
        return bounded

    def page(self, number: Any) -> Page:  # type: ignore[type-arg]
        """A deep page reads its rows' keys first (OFFSET over the ordering's index only), then
        the rows with their joined columns: OFFSET no longer joins every row it skips."""
        rows = self.object_list
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        if bottom < DEFERRED_FROM or not isinstance(rows, QuerySet) or rows.query.distinct:
            return super().page(number)
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        keys = list(rows.values_list("pk", flat=True)[bottom:top])
        found = {row.pk: row for row in rows.order_by().filter(pk__in=keys)}
        return Page([found[key] for key in keys if key in found], number, self)


PK_MARK = "pk-mark-4f1c"


class LargeChangeList(ChangeList):
    """A changelist whose row links cost no URL reversing or resolving per row: the change URL
    is reversed once a page and each row's (quoted) key put in it, with the list's filters
    appended as Django does. The links are the same as Django's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Django adds these to each row's link by parsing the link and resolving it; here they
        # are appended once, in the same encoding, and Django's step has nothing left to add.
        self.row_query, self.preserved_filters = self.preserved_filters, ""
        change = reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
            args=(PK_MARK,),
            current_app=self.model_admin.admin_site.name,
        )
        self.row_url = change.partition(PK_MARK)

    def url_for_result(self, result: Any) -> str:
        before, _, after = self.row_url
        key = url_quote(str(admin_quote(getattr(result, self.pk_attname))), safe=URL_SAFE)
        query = f"?{self.row_query}" if self.row_query else ""
        return f"{before}{key}{after}{query}"


class LargeListMixin:
    """For a ModelAdmin over a table that grows with customers: no full COUNT(*) per page, and
    rows drawn without per-row work Django repeats for every row: the action checkbox is written
    directly (the same HTML as Django's checkbox widget, which renders a template per row) and the
    row link comes from `LargeChangeList`."""

    paginator: ClassVar[type] = EstimatedCountPaginator
    show_full_result_count = False
    # Drawing a row costs Django's admin about a millisecond of CPU (a cell at a time, through its
    # generic display code): 50 rows keep a list page well inside its budget on a busy machine,
    # and support finds a customer by searching, not by paging.
    list_per_page = 50

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return LargeChangeList

    def action_checkbox(self, obj: Any) -> SafeString:
        label = format_html(gettext("Select this object for an action - {}"), str(obj))
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME,
            str(obj.pk),
            label,
        )


class WholeTermSearchMixin(LargeListMixin):
    """A large list's search that matches the whole term (a name may hold spaces) with each of
    `search_fields`, given as explicit lookups an index serves (`id__exact`,
    `external_entity_id__startswith`), ORed; `search_q` may add lookups of its own."""

    search_fields: ClassVar[list[str] | tuple[str, ...]]

    def search_q(self, term: str) -> Q:
        """What a row matching `term` satisfies."""
        found = Q()
        for lookup in self.search_fields:
            found |= Q(**{lookup: term})
        return found

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(self.search_q(term)), False


class RecentValuesFilter(admin.AllValuesFieldListFilter):
    """Django's every-value filter, offering the values of the latest RECENT_ROWS rows (in the
    admin's order) instead of scanning the whole table for its distinct values."""

    def __init__(
        self,
        field: Any,
        request: HttpRequest,
        params: Any,
        model: Any,
        model_admin: Any,
        field_path: str,
    ) -> None:
        super().__init__(field, request, params, model, model_admin, field_path)
        latest = model_admin.get_queryset(request).values_list(field_path, flat=True)
        recent = sorted({v for v in latest[:RECENT_ROWS] if v is not None})
        self.lookup_choices = recent  # type: ignore[assignment]
