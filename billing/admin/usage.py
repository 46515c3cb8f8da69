"""The billing truth in the admin: usage events (read-only, released from quarantine by staff)
and the usage dashboard."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.widgets import AutocompleteSelect
from django.core.exceptions import PermissionDenied
from django.db.models import F, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.formats import date_format

from billing.admin.staff import json_shown, milliseconds, request_actor
from billing.charts import slug_charts
from billing.health import workspace_findings
from billing.models import UsageEvent
from billing.selectors import UsageBucket, usage_by_slug
from billing.services.quarantine import usage_events_release
from gateway_project.kernel.admin_paging import WholeTermSearchMixin
from gateway_project.kernel.confirmation import action_confirmation, action_confirmed
from groups.models import Group, Workspace
from keys.models import ApiKey

DASHBOARD_TEMPLATE = "admin/billing/usage_dashboard.html"


class QuarantinedFilter(admin.SimpleListFilter):
    """Events a pipeline step set aside, and events ingest stored with a change."""

    title = "quarantine"
    parameter_name = "quarantine"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("quarantined", "Quarantined"), ("noted", "Changed at ingest")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "quarantined":
            return queryset.filter(quarantined_at__isnull=False)
        if self.value() == "noted":
            return queryset.exclude(ingest_note="")
        return queryset


@admin.register(UsageEvent)
class UsageEventAdmin(WholeTermSearchMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    """The billing truth: read-only, except releasing an event from quarantine."""

    list_display = (
        "timestamp",
        "workspace",
        "model_slug",
        "api_key_prefix",
        "external_entity_id",
        "status",
        "tokens",
        "cost_amount",
        "billing_state",
    )
    list_filter = (
        QuarantinedFilter,
        ("timestamp", admin.DateFieldListFilter),
        "status",
        "workspace",
        ("batched_at", admin.EmptyFieldListFilter),
    )
    # Newest first by the primary key's index: idempotency keys are ULIDs, in creation order.
    ordering = ("-idempotency_key",)
    actions = ["release", "release_without_metadata"]
    # Metadata is shown escaped by metadata_shown, whatever it holds; latencies rounded, in ms.
    exclude = ("request_metadata", "total_ms", "upstream_ms", "first_byte_ms")
    readonly_fields = ("metadata_shown", "latencies")
    search_fields = ("idempotency_key__exact", "request_id__exact")
    search_help_text = "A request id, an idempotency key, a key prefix or an external id (exact)."
    list_select_related = ("workspace",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # No event is ever edited; the permission only unlocks the release action.
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[UsageEvent]:
        return super().get_queryset(request).defer("request_metadata")

    def search_q(self, term: str) -> Q:
        """Exact matches, each served by an index: the event's own ids, or (events being
        indexed by group) the groups the key prefix or the external id names."""
        keys = ApiKey.objects.filter(prefix=term).values_list("group_id", flat=True)
        named = Group.objects.filter(external_entity_id=term).values_list("pk", flat=True)
        return (
            super().search_q(term)
            | Q(group_id__in=list(keys), api_key_prefix=term)
            | Q(group_id__in=list(named), external_entity_id=term)
        )

    @admin.display(description="tokens (in / out / cached in)")
    def tokens(self, obj: UsageEvent) -> str:
        return f"{obj.input_tokens:,} / {obj.output_tokens:,} / {obj.cached_input_tokens:,} tokens"

    @admin.display(description="billing")
    def billing_state(self, obj: UsageEvent) -> str:
        if obj.quarantined_at is not None:
            return f"quarantined {date_format(obj.quarantined_at, 'DATETIME_FORMAT')}"
        if obj.batched_at is not None:
            return f"batched {date_format(obj.batched_at, 'DATETIME_FORMAT')}"
        return "waiting to be batched"

    @admin.display(description="latencies")
    def latencies(self, obj: UsageEvent) -> str:
        first = "-" if obj.first_byte_ms is None else milliseconds(obj.first_byte_ms)
        return (
            f"total {milliseconds(obj.total_ms)}, upstream {milliseconds(obj.upstream_ms)}, "
            f"first byte {first}"
        )

    @admin.display(description="Request metadata")
    def metadata_shown(self, obj: UsageEvent) -> str:
        metadata = obj.request_metadata
        return getattr(metadata, "reason", None) or json_shown(metadata)

    @admin.action(
        description="Release from quarantine (batch again on the next beat)",
        permissions=("change",),
    )
    def release(self, request: HttpRequest, queryset: QuerySet[UsageEvent]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        count = usage_events_release(ids=ids, actor=request_actor(request))
        self.message_user(request, f"Released {count} quarantined event(s).")

    @admin.action(
        description="Release from quarantine without the request metadata (bill the tokens)…",
        permissions=("change",),
    )
    def release_without_metadata(
        self, request: HttpRequest, queryset: QuerySet[UsageEvent]
    ) -> HttpResponse | None:
        if not action_confirmed(request):
            return action_confirmation(
                self,
                request,
                queryset.filter(quarantined_at__isnull=False),
                title="Release without the request metadata",
                consequence="The request metadata of these events is deleted for good, then "
                "their tokens are billed on the next beat.",
                button="Yes, drop the metadata and release",
            )
        ids = list(queryset.values_list("pk", flat=True))
        count = usage_events_release(ids=ids, actor=request_actor(request), drop_metadata=True)
        self.message_user(request, f"Released {count} quarantined event(s) without metadata.")
        return None

    def get_urls(self) -> list[URLPattern]:
        dashboard = path(
            "dashboard/",
            self.admin_site.admin_view(self.dashboard_view),
            name="billing_usageevent_dashboard",
        )
        return [dashboard, *super().get_urls()]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        """Per slug: requests and tokens over 24 h and 30 days, for a workspace or one group."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = DashboardForm(request.GET or None)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "form": form,
            "title": "Usage dashboard",
        }
        if form.is_valid():
            context.update(usage_dashboard(**form.cleaned_data))
        return TemplateResponse(request, DASHBOARD_TEMPLATE, context)


class DashboardForm(forms.Form):
    workspace = forms.ModelChoiceField(
        Workspace.objects.all(),
        widget=AutocompleteSelect(UsageEvent._meta.get_field("workspace"), admin.site),
    )
    group = forms.CharField(
        required=False,
        max_length=255,
        help_text="A group id or a customer's external id; empty for the whole workspace",
    )

    def clean(self) -> dict[str, Any]:
        """Resolve an external id to its group; an unknown group is an error, not "No usage"."""
        data = super().clean() or {}
        term, workspace = data.get("group", "").strip(), data.get("workspace")
        if not term or workspace is None:
            return data
        groups = Group.objects.filter(workspace=workspace)
        found = groups.filter(pk=term).first() or (
            groups.filter(external_entity_id=term)
            .order_by(F("deleted_at").asc(nulls_first=True), "-created_at")
            .first()
        )
        if found is None:
            self.add_error("group", f"No group with the id or external id {term!r} in {workspace}.")
        else:
            data["group"] = found.pk
        return data


def usage_dashboard(*, workspace: Workspace, group: str) -> dict[str, Any]:
    """The dashboard's charts per slug and the workspace's delivery health."""
    now = timezone.now()
    day = usage_by_slug(workspace=workspace, group_id=group, until=now, buckets=24, unit="hour")
    month = usage_by_slug(workspace=workspace, group_id=group, until=now, buckets=30, unit="day")
    slugs = sorted(set(day) | set(month))
    empty_day = [UsageBucket(start=now, requests=0, tokens=0)] * 24
    empty_month = [UsageBucket(start=now, requests=0, tokens=0)] * 30
    charts = [
        (slug, slug_charts(day=day.get(slug, empty_day), month=month.get(slug, empty_month)))
        for slug in slugs
    ]
    return {
        "workspace": workspace,
        "group": group,
        "charts": charts,
        "health": workspace_findings(workspace=workspace, now=now),
    }
