"""Support staff's view of billing: usage events, webhook endpoints (secrets), deliveries.

Every write goes through billing.services so validation and the audit trail match everywhere.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from billing import services
from billing.charts import slug_charts
from billing.models import DeliveryAttempt, UsageEvent, WebhookDelivery, WebhookEndpoint
from billing.selectors import UsageBucket, delivery_health, usage_by_slug
from gateway_project.kernel.errors import GatewayError
from gateway_project.kernel.netguard import allowlist_effective, url_check
from groups.models import Workspace
from groups.services.audit import staff_actor

SECRETS_TEMPLATE = "admin/billing/secrets_shown.html"
RECOVER_TEMPLATE = "admin/billing/recover_form.html"
DASHBOARD_TEMPLATE = "admin/billing/usage_dashboard.html"


def _actor(request: HttpRequest) -> str:
    return staff_actor(request.user.get_username())


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


def _json_shown(value: Any) -> str:
    """Stored JSON for a page, whatever it holds (escaped, so nothing in it can break the page)."""
    try:
        shown = json.dumps(value, indent=2, ensure_ascii=False, default=str)
        shown.encode()
    except UnicodeEncodeError:
        return json.dumps(value, indent=2, default=str)
    except (ValueError, RecursionError) as exc:
        return f"(cannot be shown: {exc})"
    return shown


@admin.register(UsageEvent)
class UsageEventAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The billing truth: read-only, except releasing an event from quarantine."""

    list_display = (
        "timestamp",
        "workspace",
        "model_slug",
        "api_key_prefix",
        "external_entity_id",
        "status",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "batched_at",
        "quarantined_at",
    )
    list_filter = (
        QuarantinedFilter,
        "status",
        "workspace",
        ("batched_at", admin.EmptyFieldListFilter),
    )
    actions = ["release", "release_without_metadata"]
    exclude = ("request_metadata",)  # shown escaped by metadata_shown, whatever it holds
    readonly_fields = ("metadata_shown",)
    search_fields = ("=request_id", "=idempotency_key", "api_key_prefix", "=external_entity_id")
    list_select_related = ("workspace",)
    date_hierarchy = "timestamp"
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # No event is ever edited; the permission only unlocks the release action.
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[UsageEvent]:
        return super().get_queryset(request).defer("request_metadata")

    @admin.display(description="Request metadata")
    def metadata_shown(self, obj: UsageEvent) -> str:
        metadata = obj.request_metadata
        return getattr(metadata, "reason", None) or _json_shown(metadata)

    @admin.action(
        description="Release from quarantine (batch again on the next beat)",
        permissions=("change",),
    )
    def release(self, request: HttpRequest, queryset: QuerySet[UsageEvent]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        count = services.usage_events_release(ids=ids, actor=_actor(request))
        self.message_user(request, f"Released {count} quarantined event(s).")

    @admin.action(
        description="Release from quarantine without the request metadata (bill the tokens)",
        permissions=("change",),
    )
    def release_without_metadata(
        self, request: HttpRequest, queryset: QuerySet[UsageEvent]
    ) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        count = services.usage_events_release(ids=ids, actor=_actor(request), drop_metadata=True)
        self.message_user(request, f"Released {count} quarantined event(s) without metadata.")

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
    workspace = forms.ModelChoiceField(Workspace.objects.all())
    group = forms.CharField(required=False, help_text="A group id; empty for the whole workspace")


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
        "health": delivery_health(workspace=workspace, now=now),
    }


class WebhookEndpointForm(forms.ModelForm):  # type: ignore[type-arg]
    url = forms.URLField(max_length=2048, assume_scheme="https")

    class Meta:
        model = WebhookEndpoint
        fields = ("workspace",)

    def clean(self) -> dict[str, Any]:
        """The same SSRF guard the service applies (with the workspace's allowlist), as an error."""
        data = super().clean() or {}
        url, workspace = data.get("url"), data.get("workspace")
        if url and workspace is not None:
            try:
                url_check(url=url, allowlist=allowlist_effective(workspace))
            except GatewayError as exc:
                self.add_error("url", forms.ValidationError(exc.message, code=exc.code))
        return data


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Add (secret shown once), rotate the secret, enable/disable; the URL is fixed once created."""

    form = WebhookEndpointForm
    list_display = ("url", "workspace", "enabled", "disabled_reason", "created_at")
    list_filter = ("enabled", "workspace")
    search_fields = ("url", "=id")
    actions = ["rotate_secret", "rotate_secret_now", "enable", "disable"]
    readonly_fields = (
        "id",
        "workspace",
        "url",
        "enabled",
        "disabled_reason",
        "health",
        "created_at",
    )

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("workspace", "url") if obj is None else self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return () if obj is None else self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Delivery health")
    def health(self, obj: WebhookEndpoint) -> str:
        stats = delivery_health(workspace=obj.workspace, now=timezone.now())
        return ", ".join(f"{name.replace('_', ' ')}: {value}" for name, value in stats.items())

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm, change: bool) -> None:  # type: ignore[type-arg]
        if change:
            return
        endpoint, secret = services.webhook_endpoint_create(
            workspace=form.cleaned_data["workspace"],
            url=form.cleaned_data["url"],
            actor=_actor(request),
        )
        obj.pk, obj._state.adding, obj.shown_secrets = endpoint.pk, False, [(endpoint, secret)]

    def response_add(
        self, request: HttpRequest, obj: Any, post_url_continue: str | None = None
    ) -> HttpResponse:
        return self._secrets_page(request, obj.shown_secrets, title="Webhook endpoint added")

    def _secrets_page(
        self, request: HttpRequest, shown: list[tuple[Any, str]], *, title: str
    ) -> HttpResponse:
        """The plaintext secrets, in this response only: stored encrypted, never shown again."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "shown": shown,
        }
        response = TemplateResponse(request, SECRETS_TEMPLATE, context)
        add_never_cache_headers(response)
        return response

    @admin.action(
        description="Rotate the signing secret (the old one keeps working for the overlap)",
        permissions=("change",),
    )
    def rotate_secret(
        self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]
    ) -> HttpResponse:
        shown = [
            (e, services.webhook_secret_rotate(endpoint=e, actor=_actor(request))) for e in queryset
        ]
        return self._secrets_page(request, shown, title="New signing secrets")

    @admin.action(
        description="Rotate the signing secret now, old one expires at once (leaked)",
        permissions=("change",),
    )
    def rotate_secret_now(
        self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]
    ) -> HttpResponse:
        shown = [
            (e, services.webhook_secret_rotate(endpoint=e, actor=_actor(request), overlap_hours=0))
            for e in queryset
        ]
        return self._secrets_page(request, shown, title="New signing secrets (old ones revoked)")

    @admin.action(description="Enable (resume parked deliveries)", permissions=("change",))
    def enable(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            services.webhook_endpoint_set_enabled(
                endpoint=endpoint, enabled=True, actor=_actor(request)
            )
        self.message_user(request, f"Enabled {len(queryset)} endpoint(s).")

    @admin.action(description="Disable", permissions=("change",))
    def disable(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            services.webhook_endpoint_set_enabled(
                endpoint=endpoint, enabled=False, actor=_actor(request), reason="disabled by staff"
            )
        self.message_user(request, f"Disabled {len(queryset)} endpoint(s).")


class DeliveryAttemptInline(admin.TabularInline):  # type: ignore[type-arg]
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ("number", "started_at", "duration_ms", "status_code", "error", "response_body")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RecoverForm(forms.Form):
    since = forms.DateTimeField(help_text="UTC, e.g. 2026-05-05 12:00")
    workspace = forms.ModelChoiceField(
        Workspace.objects.all(), required=False, help_text="All when empty"
    )


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Deliveries and their attempt log; resend one, or recover everything failed since T."""

    list_display = (
        "id",
        "endpoint",
        "status",
        "attempts",
        "event_count",
        "next_attempt_at",
        "last_status_code",
        "created_at",
        "delivered_at",
    )
    list_filter = ("status", "endpoint__workspace")
    search_fields = ("=id", "endpoint__url")
    list_select_related = ("endpoint",)
    inlines = [DeliveryAttemptInline]
    actions = ["resend", "release", "recover_failed_since"]
    fields = (
        "id",
        "endpoint",
        "status",
        "attempts",
        "event_count",
        "next_attempt_at",
        "lease_until",
        "last_status_code",
        "last_error",
        "created_at",
        "delivered_at",
        "body_json",
    )
    readonly_fields = fields
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Body (frozen)")
    def body_json(self, obj: WebhookDelivery) -> str:
        try:
            return _json_shown(json.loads(bytes(obj.body)))
        except (ValueError, RecursionError):
            return bytes(obj.body).decode("utf-8", errors="backslashreplace")

    @admin.action(
        description="Release from quarantine (one more attempt, same id and bytes)",
        permissions=("change",),
    )
    def release(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        count = services.deliveries_release(ids=ids, actor=_actor(request))
        self.message_user(request, f"Released {count} quarantined delivery(ies).")

    @admin.action(
        description="Resend (one more attempt, same id and bytes)", permissions=("change",)
    )
    def resend(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        done = 0
        for delivery in queryset.select_related("endpoint"):
            try:
                services.delivery_resend(delivery=delivery, actor=_actor(request))
                done += 1
            except GatewayError as exc:
                self.message_user(request, f"{delivery.id}: {exc.message}", messages.ERROR)
        self.message_user(request, f"Queued {done} delivery(ies) for another attempt.")

    @admin.action(
        description="Recover everything that failed since a time…", permissions=("change",)
    )
    def recover_failed_since(
        self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]
    ) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:billing_webhookdelivery_recover"))

    def get_urls(self) -> list[URLPattern]:
        recover = path(
            "recover/",
            self.admin_site.admin_view(self.recover_view),
            name="billing_webhookdelivery_recover",
        )
        return [recover, *super().get_urls()]

    def recover_view(self, request: HttpRequest) -> HttpResponse:
        """Ask for T, then queue every delivery that failed since T for one more attempt."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        form = RecoverForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            count = services.deliveries_recover(
                since=form.cleaned_data["since"],
                workspace=form.cleaned_data["workspace"],
                actor=_actor(request),
            )
            self.message_user(request, f"Queued {count} failed delivery(ies) for another attempt.")
            return HttpResponseRedirect(reverse("admin:billing_webhookdelivery_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "form": form,
            "title": "Recover failed deliveries",
        }
        return TemplateResponse(request, RECOVER_TEMPLATE, context)
