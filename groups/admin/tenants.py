"""Admin of tenant settings: workspaces (onboarding), org prefixes, custom domains, secrets."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Model, OuterRef, QuerySet, Subquery
from django.db.models.expressions import RawSQL
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from gateway_project.kernel.admin_paging import EXACT_COUNT_LIMIT
from groups.admin.base import NoChangeMixin, ServiceAdmin, ServiceForm, actor_of
from groups.models import CustomDomain, Group, OrgPrefix, Secret, Workspace
from groups.services import (
    custom_domain_add,
    custom_domain_delete,
    org_prefix_delete,
    org_prefix_register,
    secret_create,
    secret_delete,
    secret_update,
    workspace_create,
    workspace_set_default_baseten_secret,
    workspace_set_onboarded,
    workspace_set_upstream_allowlist,
    workspace_update,
)


class AllowlistField(forms.CharField):
    """Hosts and CIDRs, one per line (commas work too); empty means "use the default"."""

    widget = forms.Textarea(attrs={"rows": 4, "cols": 60, "style": "font-family: monospace"})

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str] | None:  # type: ignore[override]
        entries = str(value or "").replace(",", "\n").split()
        return entries or None


class WorkspaceForm(ServiceForm):
    instance: Workspace

    param_fields = {
        "name": "name",
        "upstream_allowlist": "upstream_allowlist",
        "default_baseten_secret": "default_baseten_secret",
    }
    upstream_allowlist = AllowlistField(
        required=False,
        label="upstream allowlist",
        help_text=(
            "Private hosts and CIDRs (e.g. 10.20.0.0/16, vllm.lab.internal) this workspace's "
            "targets and webhooks may reach, one per line. Empty: the gateway-wide default "
            "(GATEWAY_UPSTREAM_ALLOWLIST). Another workspace never gets these."
        ),
    )

    class Meta:
        model = Workspace
        fields = ("name", "onboarded", "ed25519_public_key", "upstream_allowlist")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields.get("default_baseten_secret")
        if isinstance(field, forms.ModelChoiceField):
            # Only this workspace's own secrets can be chosen (the service checks it again).
            field.queryset = Secret.objects.filter(workspace_id=self.instance.pk)

    def service_save(self, data: dict[str, Any]) -> Workspace:
        key = data.get("ed25519_public_key") or ""
        if self.instance._state.adding:
            workspace = workspace_create(
                name=data["name"], actor=self.actor, onboarded=data.get("onboarded", False)
            )
            workspace = workspace_update(
                workspace=workspace, actor=self.actor, ed25519_public_key=key
            )
        else:
            workspace = workspace_update(
                workspace=self.instance, actor=self.actor, name=data["name"], ed25519_public_key=key
            )
        if "upstream_allowlist" in self.changed_data:
            workspace = workspace_set_upstream_allowlist(
                workspace=workspace, entries=data.get("upstream_allowlist"), actor=self.actor
            )
        if "default_baseten_secret" in self.changed_data:
            workspace = workspace_set_default_baseten_secret(
                workspace=workspace, secret=data.get("default_baseten_secret"), actor=self.actor
            )
        return workspace


class OrgPrefixInline(admin.TabularInline):  # type: ignore[type-arg]
    model: type[Model] = OrgPrefix
    fields = ("prefix", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class CustomDomainInline(OrgPrefixInline):
    model = CustomDomain
    fields = ("host", "created_at")
    readonly_fields = fields


@admin.register(Workspace)
class WorkspaceAdmin(ServiceAdmin):
    form = WorkspaceForm
    list_display = ("name", "id", "onboarded", "prefix_count", "live_group_count", "created_at")
    list_filter = ("onboarded",)
    search_fields = ("name", "=id", "org_prefixes__prefix")
    inlines = (OrgPrefixInline, CustomDomainInline)
    actions = ("onboard", "offboard")

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.inlines if obj is not None else ()

    def get_queryset(self, request: HttpRequest) -> QuerySet[Workspace]:
        # Counted per listed workspace (a subquery each), not by joining every group of every
        # workspace before the page is cut.
        workspaces: QuerySet[Workspace] = super().get_queryset(request)
        return workspaces.annotate(
            prefix_count=_count_of(OrgPrefix.objects.all()),
            live_group_count=_live_groups_bounded(),
        )

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is None:
            return ("name", "onboarded", "ed25519_public_key", "upstream_allowlist")
        return (
            "id",
            "name",
            "onboarded",
            "ed25519_public_key",
            "upstream_allowlist",
            "default_baseten_secret",
            "add_links",
            "created_at",
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return () if obj is None else ("id", "onboarded", "add_links", "created_at")

    @admin.display(description="org prefixes", ordering="prefix_count")
    def prefix_count(self, obj: Any) -> int:
        return int(obj.prefix_count or 0)

    @admin.display(description="live groups", ordering="live_group_count")
    def live_group_count(self, obj: Any) -> int | str:
        count = int(obj.live_group_count or 0)
        return f"more than {EXACT_COUNT_LIMIT:,}" if count > EXACT_COUNT_LIMIT else count

    @admin.display(description="add")
    def add_links(self, obj: Workspace) -> SafeString:
        links = [
            (reverse(f"admin:groups_{name}_add") + f"?workspace={obj.pk}", label)
            for name, label in (
                ("orgprefix", "Register an org prefix"),
                ("customdomain", "Add a custom domain"),
                ("secret", "Add a secret"),
            )
        ]
        note = "Onboard / off-board with the actions of the workspace list."
        return format_html("{}<br>{}", format_html_join(" · ", '<a href="{}">{}</a>', links), note)

    def _set_onboarded(
        self, request: HttpRequest, queryset: QuerySet[Workspace], value: bool
    ) -> None:
        for workspace in queryset:
            workspace_set_onboarded(workspace=workspace, onboarded=value, actor=actor_of(request))
        verb = "onboarded" if value else "off-boarded"
        self.message_user(request, f"{queryset.count()} workspace(s) {verb}.", messages.SUCCESS)

    @admin.action(description="Onboard selected workspaces", permissions=["change"])
    def onboard(self, request: HttpRequest, queryset: QuerySet[Workspace]) -> None:
        self._set_onboarded(request, queryset, True)

    @admin.action(
        description="Off-board selected workspaces (their keys stop working)",
        permissions=["change"],
    )
    def offboard(self, request: HttpRequest, queryset: QuerySet[Workspace]) -> None:
        self._set_onboarded(request, queryset, False)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _live_groups_bounded() -> RawSQL:
    """The outer workspace's live groups, counted up to one past EXACT_COUNT_LIMIT: a lab with
    100,000 customers is not counted one by one on every list page."""
    group = Group._meta.db_table
    workspace = Workspace._meta.db_table
    return RawSQL(
        f"SELECT COUNT(*) FROM (SELECT 1 FROM {group} bounded WHERE bounded.workspace_id = "
        f"{workspace}.id AND bounded.deleted_at IS NULL LIMIT %s) live",
        (EXACT_COUNT_LIMIT + 1,),
    )


def _count_of(rows: QuerySet[Any]) -> Subquery:
    """The number of `rows` of the workspace of the outer row, as a subquery."""
    per_workspace = rows.filter(workspace=OuterRef("pk")).order_by().values("workspace")
    return Subquery(per_workspace.annotate(n=Count("*")).values("n")[:1])


# --- org prefixes, custom domains, secrets ------------------------------------------------------


class OrgPrefixForm(ServiceForm):
    param_fields = {"prefix": "prefix"}

    class Meta:
        model = OrgPrefix
        fields = ("workspace", "prefix")

    def service_save(self, data: dict[str, Any]) -> OrgPrefix:
        return org_prefix_register(
            workspace=data["workspace"], prefix=data["prefix"], actor=self.actor
        )


@admin.register(OrgPrefix)
class OrgPrefixAdmin(NoChangeMixin, ServiceAdmin):
    form = OrgPrefixForm
    list_display = ("prefix", "workspace", "created_at")
    autocomplete_fields = ("workspace",)
    list_select_related = ("workspace",)
    search_fields = ("prefix", "workspace__name", "=workspace__id")

    def delete_model(self, request: HttpRequest, obj: OrgPrefix) -> None:
        org_prefix_delete(org_prefix=obj, actor=actor_of(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[OrgPrefix]) -> None:
        for org_prefix in queryset:
            self.delete_model(request, org_prefix)


class CustomDomainForm(ServiceForm):
    param_fields = {"host": "host"}

    class Meta:
        model = CustomDomain
        fields = ("workspace", "host")

    def service_save(self, data: dict[str, Any]) -> CustomDomain:
        return custom_domain_add(workspace=data["workspace"], host=data["host"], actor=self.actor)


@admin.register(CustomDomain)
class CustomDomainAdmin(NoChangeMixin, ServiceAdmin):
    form = CustomDomainForm
    list_display = ("host", "workspace", "created_at")
    autocomplete_fields = ("workspace",)
    list_select_related = ("workspace",)
    search_fields = ("host", "workspace__name", "=workspace__id")

    def delete_model(self, request: HttpRequest, obj: CustomDomain) -> None:
        custom_domain_delete(domain=obj, actor=actor_of(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[CustomDomain]) -> None:
        for domain in queryset:
            self.delete_model(request, domain)


class SecretForm(ServiceForm):
    """Write-only: the value is encrypted by the service and never rendered back."""

    instance: Secret

    param_fields = {"name": "name", "value": "value"}
    value = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        strip=False,
        help_text="Stored encrypted; it is never shown again. On change, leave empty to keep it.",
    )

    class Meta:
        model = Secret
        fields = ("workspace", "name")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.instance._state.adding:
            self.fields["value"].required = False

    def service_save(self, data: dict[str, Any]) -> Secret:
        if self.instance._state.adding:
            return secret_create(
                workspace=data["workspace"],
                name=data["name"],
                value=data["value"],
                actor=self.actor,
            )
        if data.get("value"):
            return secret_update(secret=self.instance, value=data["value"], actor=self.actor)
        return self.instance


@admin.register(Secret)
class SecretAdmin(ServiceAdmin):
    form = SecretForm
    list_display = ("name", "id", "workspace", "created_at", "updated_at")
    autocomplete_fields = ("workspace",)
    list_select_related = ("workspace",)
    search_fields = ("name", "=id", "workspace__name")
    list_filter = ("workspace",)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is None:
            return ("workspace", "name", "value")
        return ("id", "workspace", "name", "value", "created_at", "updated_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return () if obj is None else ("id", "workspace", "name", "created_at", "updated_at")

    def delete_model(self, request: HttpRequest, obj: Secret) -> None:
        secret_delete(secret=obj, actor=actor_of(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Secret]) -> None:
        for secret in queryset:
            self.delete_model(request, secret)
