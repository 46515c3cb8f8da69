"""Support's customer page in the admin: search, the page, and the way in from any related object.

Routes (gateway_project/urls.py mounts them under /admin/customers/, behind the admin login):
- `customer-search`: GET ?q= (external id, group id, key prefix) or POST q= (also a whole key,
  which is resolved to its prefix and redirected, so it never reaches a URL or an access log);
- `customer-page`: /admin/customers/<group id>/;
- `customer-of`: /admin/customers/of/<model>/<pk>/, the customer of a group, key, usage event,
  delivery or audit row (one: redirected; several: listed).
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.views.decorators.debug import sensitive_post_parameters

from billing.models import UsageEvent
from billing.selectors import delivery_group_ids
from groups.models import AuditEvent, Group
from keys.models import ApiKey
from routing.customer import (
    MAX_TERM_LENGTH,
    Match,
    customer_get,
    customer_overview,
    customers_find,
    key_term_prefix,
    term_is_key,
)

SEARCH_TEMPLATE = "admin/customer/search.html"
PAGE_TEMPLATE = "admin/customer/page.html"
# The page shows all of these: who may not view one of them may not view the page.
PERMISSIONS = (
    "groups.view_group",
    "groups.view_auditevent",
    "keys.view_apikey",
    "billing.view_usageevent",
    "billing.view_webhookdelivery",
)


def _allowed(request: HttpRequest) -> None:
    if not request.user.has_perms(PERMISSIONS):
        raise PermissionDenied


def _context(request: HttpRequest, **values: object) -> dict[str, object]:
    return {**admin.site.each_context(request), **values}


def _search_url(term: str) -> str:
    return f"{reverse('customer-search')}?{urlencode({'q': term})}"


def _page_url(match: Match) -> str:
    url = reverse("customer-page", args=[match.group.pk])
    return f"{url}?{urlencode({'key': match.key_prefix})}" if match.key_prefix else url


@sensitive_post_parameters("q")
def customer_search(request: HttpRequest) -> HttpResponse:
    """Find a customer; one match opens its page."""
    _allowed(request)
    source = request.POST if request.method == "POST" else request.GET
    term = source.get("q", "").strip()[:MAX_TERM_LENGTH]
    if term_is_key(term):
        # A whole key (or what looks like one) is never echoed: found, it becomes its prefix.
        prefix = key_term_prefix(term)
        if prefix is not None:
            return HttpResponseRedirect(_search_url(prefix))
        if not customers_find(term=term):  # an external id may look like a key: those are shown
            flag = "unknown_key" if request.method == "POST" else "key_in_url"
            return HttpResponseRedirect(f"{reverse('customer-search')}?{flag}=1")
    if request.method == "POST":
        return HttpResponseRedirect(_search_url(term))
    matches = customers_find(term=term)
    if len(matches) == 1:
        return HttpResponseRedirect(_page_url(matches[0]))
    context = _context(
        request,
        title="Customers",
        term=term,
        matches=[(match, _page_url(match)) for match in matches],
        unknown_key="unknown_key" in request.GET,
        key_in_url="key_in_url" in request.GET,
    )
    return TemplateResponse(request, SEARCH_TEMPLATE, context)


def customer_page(request: HttpRequest, group_id: str) -> HttpResponse:
    """One customer: group, keys, usage against limits, rejections, billing, audit."""
    _allowed(request)
    group = customer_get(group_id=group_id)
    if group is None:
        raise Http404("No such customer.")
    now = timezone.now()
    customer = customer_overview(group=group, now=now)
    context = _context(
        request,
        title=f"Customer {group.external_entity_id}",
        customer=customer,
        now=now,
        highlight=request.GET.get("key", ""),
        dashboard_query=urlencode({"workspace": group.workspace_id, "group": group.pk}),
    )
    return TemplateResponse(request, PAGE_TEMPLATE, context)


def _groups_of(model: str, pk: str) -> list[str]:
    if model == "group":
        return [pk]
    if model == "apikey":
        return list(ApiKey.objects.filter(pk=pk).values_list("group_id", flat=True))
    if model == "usageevent":
        return list(UsageEvent.objects.filter(pk=pk).values_list("group_id", flat=True))
    if model == "webhookdelivery":
        return delivery_group_ids(delivery_id=pk)
    if model == "auditevent":
        return _audit_groups(pk)
    raise Http404("No customer page for this kind of object.")


def _audit_groups(pk: str) -> list[str]:
    row = AuditEvent.objects.filter(pk=pk).first()
    if row is None:
        return []
    if row.object_type == "group":
        return [row.object_id]
    if row.object_type == "api_key":
        return _groups_of("apikey", row.object_id)
    return []


def customer_of(request: HttpRequest, model: str, pk: str) -> HttpResponse:
    """The customer page of a related object (a list when it concerns several customers)."""
    _allowed(request)
    group_ids = _groups_of(model, pk)
    if len(group_ids) == 1:
        return HttpResponseRedirect(reverse("customer-page", args=[group_ids[0]]))
    groups = Group.objects.select_related("workspace").filter(pk__in=group_ids).order_by("pk")
    matches = [Match(group, "carried by this object") for group in groups]
    context = _context(
        request,
        title="Customers",
        term="",
        matches=[(match, _page_url(match)) for match in matches],
        related=True,
    )
    return TemplateResponse(request, SEARCH_TEMPLATE, context)


def customer_urls() -> list[URLPattern]:
    """The routes, wrapped in the admin's login and staff check."""
    view = admin.site.admin_view
    return [
        path("", view(customer_search), name="customer-search"),
        path("of/<str:model>/<str:pk>/", view(customer_of), name="customer-of"),
        path("<str:group_id>/", view(customer_page), name="customer-page"),
    ]
