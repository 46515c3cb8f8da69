"""Webhook endpoints in the admin: add one (its secret shown once), rotate the secret, enable or
disable; the URL is fixed once created. Rotating and disabling ask first; every write redirects,
so reloading the page that shows new secrets never rotates again."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from billing.admin.staff import request_actor
from billing.health import duration_words, workspace_findings
from billing.models import WebhookEndpoint
from billing.services.webhooks import (
    webhook_endpoint_create,
    webhook_endpoint_set_enabled,
    webhook_secret_rotate,
)
from gateway_project.kernel.admin_pages import ReadOnlyPageMixin
from gateway_project.kernel.admin_paging import LargeListMixin
from gateway_project.kernel.confirmation import action_confirmation, action_confirmed
from gateway_project.kernel.errors import GatewayError
from gateway_project.kernel.netguard import allowlist_effective, url_check
from gateway_project.kernel.shown_once import shown_once_put, shown_once_take

SECRETS_TEMPLATE = "admin/billing/secrets_shown.html"


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
class WebhookEndpointAdmin(LargeListMixin, ReadOnlyPageMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    """Add (secret shown once), rotate the secret, enable/disable; the URL is fixed once created."""

    form = WebhookEndpointForm
    list_display = ("url", "workspace", "enabled", "disabled_reason", "created_at")
    list_filter = ("enabled", "workspace")
    search_fields = ("url", "id__exact")
    autocomplete_fields = ("workspace",)
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

    @admin.display(description="Delivery health of the workspace")
    def health(self, obj: WebhookEndpoint) -> str:
        findings = workspace_findings(workspace=obj.workspace, now=timezone.now())
        return "; ".join(f"{f.label}: {f.value}" for f in findings)

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm, change: bool) -> None:  # type: ignore[type-arg]
        if change:
            return
        endpoint, secret = webhook_endpoint_create(
            workspace=form.cleaned_data["workspace"],
            url=form.cleaned_data["url"],
            actor=request_actor(request),
        )
        obj.pk, obj._state.adding, obj.shown_secrets = endpoint.pk, False, [(endpoint, secret)]

    def response_add(
        self, request: HttpRequest, obj: Any, post_url_continue: str | None = None
    ) -> HttpResponse:
        return self._secrets_redirect(request, obj.shown_secrets, title="Webhook endpoint added")

    def _secrets_redirect(
        self, request: HttpRequest, shown: list[tuple[WebhookEndpoint, str]], *, title: str
    ) -> HttpResponse:
        """Redirect to the page that shows the new secrets once (a reload cannot rotate again)."""
        payload = {"title": title, "shown": [[e.pk, secret] for e, secret in shown]}
        token = shown_once_put(user_id=request.user.pk, payload=payload)
        url = reverse("admin:billing_webhookendpoint_secrets", args=[token])
        return HttpResponseRedirect(url, status=303)

    def get_urls(self) -> list[URLPattern]:
        secrets = path(
            "secrets/<str:token>/",
            self.admin_site.admin_view(self.secrets_view),
            name="billing_webhookendpoint_secrets",
        )
        return [secrets, *super().get_urls()]

    def secrets_view(self, request: HttpRequest, token: str) -> HttpResponse:
        """The plaintext secrets, once: stored encrypted, never shown again."""
        if not (self.has_add_permission(request) or self.has_change_permission(request)):
            raise PermissionDenied
        payload = shown_once_take(user_id=request.user.pk, token=token) or {}
        pairs = payload.get("shown", [])
        endpoints = WebhookEndpoint.objects.in_bulk([pk for pk, _ in pairs])
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": payload.get("title", "Signing secrets"),
            "shown": [(endpoints[pk], secret) for pk, secret in pairs if pk in endpoints],
        }
        response = TemplateResponse(request, SECRETS_TEMPLATE, context)
        add_never_cache_headers(response)
        return response

    def _rotate(
        self,
        request: HttpRequest,
        queryset: QuerySet[WebhookEndpoint],
        *,
        overlap_hours: float | None,
        consequence: str,
    ) -> HttpResponse:
        if not action_confirmed(request):
            return action_confirmation(
                self,
                request,
                queryset,
                title="Rotate signing secrets",
                consequence=consequence,
                button="Yes, rotate",
            )
        actor = request_actor(request)
        shown = [
            (e, webhook_secret_rotate(endpoint=e, actor=actor, overlap_hours=overlap_hours))
            for e in queryset
        ]
        title = "New signing secrets" + (" (old ones revoked)" if overlap_hours == 0 else "")
        return self._secrets_redirect(request, shown, title=title)

    @admin.action(
        description="Rotate the signing secret (the old one keeps working for the overlap)…",
        permissions=("change",),
    )
    def rotate_secret(
        self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]
    ) -> HttpResponse:
        overlap = duration_words(settings.GATEWAY_WEBHOOK_SECRET_OVERLAP_HOURS * 3600)
        return self._rotate(
            request,
            queryset,
            overlap_hours=None,
            consequence="A new secret signs from now on; the current one keeps signing for "
            f"{overlap}. Give the new secret to the receiver within that time.",
        )

    @admin.action(
        description="Rotate the signing secret now, old one expires at once (leaked)…",
        permissions=("change",),
    )
    def rotate_secret_now(
        self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]
    ) -> HttpResponse:
        return self._rotate(
            request,
            queryset,
            overlap_hours=0,
            consequence="The current secret stops signing at once: the receiver rejects every "
            "delivery until it has the new secret. Use this when the secret leaked.",
        )

    @admin.action(description="Enable (resume parked deliveries)", permissions=("change",))
    def enable(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            webhook_endpoint_set_enabled(
                endpoint=endpoint, enabled=True, actor=request_actor(request)
            )
        self.message_user(request, f"Enabled {len(queryset)} endpoint(s).")

    @admin.action(description="Disable…", permissions=("change",))
    def disable(
        self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]
    ) -> HttpResponse | None:
        if not action_confirmed(request):
            return action_confirmation(
                self,
                request,
                queryset,
                title="Disable webhook endpoints",
                consequence="Nothing is delivered to these endpoints until they are enabled "
                "again; their pending deliveries are parked.",
                button="Yes, disable",
            )
        for endpoint in queryset:
            webhook_endpoint_set_enabled(
                endpoint=endpoint,
                enabled=False,
                actor=request_actor(request),
                reason="disabled by staff",
            )
        self.message_user(request, f"Disabled {len(queryset)} endpoint(s).")
        return None
