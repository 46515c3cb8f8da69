"""Webhook endpoints in the admin: add one (its secret shown once), rotate the secret, enable or
disable; the URL is fixed once created."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from billing.admin.staff import request_actor
from billing.models import WebhookEndpoint
from billing.selectors import delivery_health
from billing.services.webhooks import (
    webhook_endpoint_create,
    webhook_endpoint_set_enabled,
    webhook_secret_rotate,
)
from gateway_project.kernel.errors import GatewayError
from gateway_project.kernel.netguard import allowlist_effective, url_check

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
        endpoint, secret = webhook_endpoint_create(
            workspace=form.cleaned_data["workspace"],
            url=form.cleaned_data["url"],
            actor=request_actor(request),
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
            (e, webhook_secret_rotate(endpoint=e, actor=request_actor(request))) for e in queryset
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
            (e, webhook_secret_rotate(endpoint=e, actor=request_actor(request), overlap_hours=0))
            for e in queryset
        ]
        return self._secrets_page(request, shown, title="New signing secrets (old ones revoked)")

    @admin.action(description="Enable (resume parked deliveries)", permissions=("change",))
    def enable(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            webhook_endpoint_set_enabled(
                endpoint=endpoint, enabled=True, actor=request_actor(request)
            )
        self.message_user(request, f"Enabled {len(queryset)} endpoint(s).")

    @admin.action(description="Disable", permissions=("change",))
    def disable(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            webhook_endpoint_set_enabled(
                endpoint=endpoint,
                enabled=False,
                actor=request_actor(request),
                reason="disabled by staff",
            )
        self.message_user(request, f"Disabled {len(queryset)} endpoint(s).")
