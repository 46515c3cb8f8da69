"""Admin of the customer hierarchy (groups, their models and limits) and the audit trail.

A live group's models and limits are edited as typed rows (groups/admin/limits.py) on their own
page; a new group may be given its models in the API's wire shape (JSON) at creation. Both save
through group_create / group_update, so the hierarchy checks and the audit apply.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from gateway_project.kernel.admin_pages import LiveFilter, ReadOnlyPageMixin
from gateway_project.kernel.admin_paging import RecentValuesFilter, WholeTermSearchMixin
from gateway_project.kernel.errors import GatewayError
from groups.admin.base import PrettyJSONField, ServiceAdmin, ServiceForm, actor_of, change_link
from groups.admin.limits import LimitRowFormSet, LimitRows, rows_initial
from groups.models import AuditEvent, Group, GroupModel, LimitEnforcement
from groups.selectors import audit_search, group_effective_models, group_models, group_subtree
from groups.services import MAX_DEPTH, group_create, group_delete, group_update

MODELS_HELP = (
    'A JSON list, e.g. [{"slug": "acme/llama", "rate_limits": [{"type": "TOKEN", "unit": "MINUTE", '
    '"threshold": 100000}], "usage_limits": [{"type": "TOKEN", "unit": "DAY", '
    '"threshold": 5000000}]}]. Rate limits: TOKEN|REQUEST per SECOND|MINUTE; usage limits: '
    "TOKEN|REQUEST per DAY. Saving replaces the whole set; [] removes all access."
)
CHILDREN_SHOWN = 50
EFFECTIVE_COLUMNS = ("slug", "kind", "type", "unit", "threshold", "source group")
DETAIL_FIELDS = (
    "id",
    "workspace",
    "external_entity_id",
    "parent_link",
    "depth",
    "limit_enforcement",
    "is_legacy_user",
    "created_at",
    "updated_at",
    "deleted_at",
)


class GroupForm(ServiceForm):
    param_fields = {
        "metadata.external_entity_id": "external_entity_id",
        "customer_id": "external_entity_id",
        "metadata.name": "name",
        "models": "models_json",
        "hierarchy.parent_group_id": "parent_group_id",
        "hierarchy.limit_enforcement": "limit_enforcement",
    }
    parent_group_id = forms.CharField(
        required=False, label="parent group id", help_text="grp_…; leave empty for a root group."
    )
    limit_enforcement = forms.ChoiceField(
        required=False,
        choices=[("", "inherit the parent's (INDEPENDENT for a root)"), *LimitEnforcement.choices],
    )
    models_json = PrettyJSONField(
        label="models (JSON)",
        help_text=MODELS_HELP,
        widget=forms.Textarea(attrs={"rows": 16, "cols": 100, "style": "font-family: monospace"}),
    )

    class Meta:
        model = Group
        fields = ("workspace", "external_entity_id", "name")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.instance._state.adding:
            # A live group's models are edited as rows on their own page.
            self.fields.pop("parent_group_id", None)
            self.fields.pop("models_json", None)
        else:
            self.initial.setdefault("models_json", [])

    def service_save(self, data: dict[str, Any]) -> Group:
        if self.instance._state.adding:
            return group_create(
                workspace=data["workspace"],
                actor=self.actor,
                external_entity_id=data["external_entity_id"],
                models=data["models_json"],
                name=data.get("name") or "",
                limit_enforcement=data.get("limit_enforcement") or None,
                parent_group_id=data.get("parent_group_id") or None,
            )
        return group_update(
            workspace=self.instance.workspace,
            group_id=self.instance.pk,
            actor=self.actor,
            name=data.get("name") or "",
        )


class GroupModelInline(admin.TabularInline):  # type: ignore[type-arg]
    """The configured access rows; edited with "Edit models and limits"."""

    model = GroupModel
    fields = ("position", "slug", "configured_limits")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name = "configured model"
    verbose_name_plural = "configured models (change them with “Edit models and limits”)"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[GroupModel]:
        return super().get_queryset(request).prefetch_related("limits")

    @admin.display(description="limits")
    def configured_limits(self, obj: GroupModel) -> str:
        return ", ".join(limit_words(lim) for lim in obj.limits.all()) or "no limits"


class DepthFilter(admin.SimpleListFilter):
    """The fixed depths 1..MAX_DEPTH (Django's own filter would scan the table for them)."""

    title = "depth"
    parameter_name = "depth"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(depth), str(depth)) for depth in range(1, MAX_DEPTH + 1)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(depth=int(value)) if value and value.isdigit() else queryset


THRESHOLD_UNITS = {"TOKEN": "tokens", "REQUEST": "requests"}


def threshold_words(*, type_: str, threshold: int) -> str:
    """`100,000 tokens`: a threshold with separators and its unit."""
    return f"{threshold:,} {THRESHOLD_UNITS.get(type_, type_.lower())}"


def limit_words(limit: Any) -> str:
    """`rate: 100,000 tokens per minute`: a configured limit as support reads it."""
    amount = threshold_words(type_=limit.type, threshold=limit.threshold)
    return f"{limit.kind.lower()}: {amount} per {limit.unit.lower()}"


@admin.register(Group)
class GroupAdmin(WholeTermSearchMixin, ReadOnlyPageMixin, ServiceAdmin):
    form = GroupForm
    change_form_template = "admin/groups/group/change_form.html"
    list_display = (
        "external_entity_id",
        "name",
        "workspace",
        "parent_link",
        "depth",
        "limit_enforcement",
        "is_legacy_user",
        "deleted",
    )
    list_select_related = ("workspace", "parent")
    list_filter = (LiveFilter, "limit_enforcement", "is_legacy_user", DepthFilter, "workspace")
    # Each an indexed lookup (groups/migrations/0005_admin_search_indexes.py): an exact id, a
    # case-sensitive external id prefix, a name prefix in any case.
    search_fields = ("id__exact", "external_entity_id__startswith", "name__istartswith")
    search_help_text = "A group id, the start of an external id, or the start of a name."
    autocomplete_fields = ("workspace",)
    inlines = (GroupModelInline,)

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.inlines if obj is not None else ()

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            fields = (
                "workspace",
                "external_entity_id",
                "name",
                "parent_group_id",
                "limit_enforcement",
                "models_json",
            )
            return [(None, {"fields": fields})]
        editable = ("name",)
        return [
            (None, {"fields": DETAIL_FIELDS}),
            ("Edit", {"fields": editable}),
            ("Hierarchy", {"fields": ("children_panel",)}),
            ("Effective limits (what the runtime enforces)", {"fields": ("effective_panel",)}),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is None:
            return ()
        return (*DETAIL_FIELDS, "children_panel", "effective_panel")

    @staticmethod
    def _live(obj: Any) -> bool:
        return obj is None or obj.deleted_at is None

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._live(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._live(obj) and super().has_delete_permission(request, obj)

    @admin.display(boolean=True, description="deleted", ordering="deleted_at")
    def deleted(self, obj: Group) -> bool:
        return obj.deleted_at is not None

    @admin.display(description="parent", ordering="parent")
    def parent_link(self, obj: Group) -> SafeString | str:
        return change_link(obj.parent)

    @admin.display(description="live children")
    def children_panel(self, obj: Group) -> SafeString | str:
        live = obj.children.filter(deleted_at__isnull=True).order_by("created_at")
        children = list(live[: CHILDREN_SHOWN + 1])
        links = [(change_link(child),) for child in children[:CHILDREN_SHOWN]]
        shown = format_html_join(mark_safe("<br>"), "{}", links)
        if len(children) > CHILDREN_SHOWN:
            url = reverse("admin:groups_group_changelist") + f"?parent={obj.pk}&state=live"
            return format_html('{}<br><a href="{}">all live children…</a>', shown, url)
        return shown or "none"

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Group], search_term: str
    ) -> tuple[QuerySet[Group], bool]:
        """Choosing a key's group offers live groups only. A choice box lists its matches by
        external id: read from the search's indexes and sorted, instead of walking the whole
        table in id order until enough matches turn up."""
        found, duplicates = super().get_search_results(request, queryset, search_term)
        if request.GET.get("model_name") == "apikey":
            found = found.filter(deleted_at__isnull=True)
        if request.GET.get("field_name") and search_term.strip():
            found = found.order_by("external_entity_id", "pk")
        return found, duplicates

    @admin.display(description="effective models")
    def effective_panel(self, obj: Group) -> SafeString | str:
        if obj.deleted_at is not None:
            return "deleted"
        rows = _effective_rows(obj)
        if not rows:
            return "no model access"
        header = format_html_join("", "<th>{}</th>", [(name,) for name in EFFECTIVE_COLUMNS])
        body = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows
        )
        return format_html(
            "<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", header, body
        )

    def get_urls(self) -> list[URLPattern]:
        limits = path(
            "<path:object_id>/limits/",
            self.admin_site.admin_view(self.limits_view),
            name="groups_group_limits",
        )
        return [limits, *super().get_urls()]

    def limits_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The group's models and limits as typed rows; a valid save redirects to the group."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        live = self.get_queryset(request).filter(deleted_at__isnull=True)
        group = get_object_or_404(live.select_related("workspace"), pk=unquote(object_id))
        rows = LimitRows(
            request.POST or None, initial=rows_initial(group_models(group=group)), prefix="rows"
        )
        assert isinstance(rows, LimitRowFormSet)
        if request.method == "POST" and rows.is_valid():
            try:
                group_update(
                    workspace=group.workspace,
                    group_id=group.pk,
                    actor=actor_of(request),
                    models=rows.models(),
                )
            except GatewayError as exc:
                rows.service_error(exc)
            else:
                self.message_user(request, f"Saved the models and limits of {group}.")
                url = reverse("admin:groups_group_change", args=[group.pk])
                return HttpResponseRedirect(url, status=303)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Models and limits of {group}",
            "group": group,
            "rows": rows,
        }
        return TemplateResponse(request, "admin/groups/group/limits.html", context)

    def delete_model(self, request: HttpRequest, obj: Group) -> None:
        group_delete(workspace=obj.workspace, group_id=obj.pk, actor=actor_of(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Group]) -> None:
        for group in queryset.order_by("depth").select_related("workspace"):
            group.refresh_from_db(fields=["deleted_at"])  # an ancestor's delete may have taken it
            if group.deleted_at is None:
                self.delete_model(request, group)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        """A soft delete: list the subtree that goes with each group; nothing is protected."""
        doomed = []
        for group in objs:
            doomed.append(
                f"{group} and its live descendants: {[str(g) for g in group_subtree(group=group)]}"
            )
        return doomed, {"groups (soft-deleted, keys revoked)": len(doomed)}, set(), []


def _effective_rows(group: Group) -> list[tuple[Any, ...]]:
    effective = group_effective_models(group=group)
    pairs = [
        (item["slug"], kind.split("_")[0], lim)
        for item in effective
        for kind in ("rate_limits", "usage_limits")
        for lim in item[kind]
    ]
    sources = Group.objects.in_bulk({lim["source_group"] for _, _, lim in pairs})
    rows: list[tuple[Any, ...]] = [
        (
            slug,
            kind,
            lim["type"],
            lim["unit"],
            threshold_words(type_=lim["type"], threshold=lim["threshold"]),
            change_link(sources.get(lim["source_group"])),
        )
        for slug, kind, lim in pairs
    ]
    limited = {slug for slug, _, _ in pairs}
    rows += [
        (item["slug"], "-", "-", "-", "unlimited", "-")
        for item in effective
        if item["slug"] not in limited
    ]
    return rows


@admin.register(AuditEvent)
class AuditEventAdmin(WholeTermSearchMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("created_at", "actor", "action", "object_type", "object_id", "workspace")
    list_select_related = ("workspace",)
    list_filter = (
        ("created_at", admin.DateFieldListFilter),
        ("action", RecentValuesFilter),
        ("object_type", RecentValuesFilter),
    )
    search_fields = ("=object_id", "^actor")
    search_help_text = (
        "An object id, the start of an actor (staff:alice, mgmt:sky_…), a whole key prefix or a "
        "customer's whole external id."
    )
    fields = (
        "id",
        "created_at",
        "actor",
        "action",
        "object_type",
        "object_id",
        "workspace",
        "before",
        "after",
    )
    readonly_fields = fields

    def search_q(self, term: str) -> Q:
        return audit_search(term=term)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
