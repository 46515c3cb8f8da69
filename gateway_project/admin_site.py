"""The product's admin site: its name in the header, an index for support, no "View site" (the
gateway has no public site), and the billing banner on every page when billing needs staff."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path, reverse
from django.utils import timezone
from django.utils.formats import date_format

from billing.health import (
    Finding,
    pipeline_alerts,
    pipeline_findings,
    workspace_findings,
    workspaces_with_webhooks,
)

PRODUCT = "Inference gateway"
# Two apps hold a "Groups" model: Django's staff permission groups and the customer hierarchy.
APP_LABELS = {"auth": "Staff accounts", "groups": "Customers, limits and audit"}
MODEL_LABELS = {("auth", "Group"): "Staff permission groups", ("auth", "User"): "Staff users"}


class GatewayAdminSite(admin.AdminSite):
    site_header = f"{PRODUCT} administration"
    site_title = f"{PRODUCT} admin"
    index_title = "Support console"
    site_url = None
    index_template = "admin/gateway_index.html"
    # The app list in a left column would leave lists and inlines too little of a 1400 px window.
    enable_nav_sidebar = False

    def each_context(self, request: HttpRequest) -> dict[str, Any]:
        context = super().each_context(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_active and user.is_staff:
            context["billing_alerts"] = [_shown(alert) for alert in pipeline_alerts()]
        return context

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        extra = {"pipeline_health": pipeline_findings(), **(extra_context or {})}
        return super().index(request, extra)

    def get_urls(self) -> list[URLResolver | URLPattern]:
        health = path(
            "billing-health/", self.admin_view(self.billing_health_view), name="billing_health"
        )
        return [health, *super().get_urls()]

    def billing_health_view(self, request: HttpRequest) -> HttpResponse:
        """The pipeline's findings, then each workspace's deliveries, with their levels."""
        if not request.user.has_perm("billing.view_webhookdelivery"):
            raise PermissionDenied
        now = timezone.now()
        context = {
            **self.each_context(request),
            "title": "Billing health",
            "measured_at": date_format(now, "DATETIME_FORMAT"),
            "pipeline": pipeline_findings(now=now.timestamp()),
            "workspaces": [
                (workspace, workspace_findings(workspace=workspace, now=now))
                for workspace in workspaces_with_webhooks()
            ],
        }
        return TemplateResponse(request, "admin/billing_health.html", context)

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[Any]:
        apps = super().get_app_list(request, app_label)
        for app in apps:
            app["name"] = APP_LABELS.get(app["app_label"], app["name"])
            for model in app["models"]:
                key = (app["app_label"], model["object_name"])
                model["name"] = MODEL_LABELS.get(key, model["name"])
        return apps


def _shown(alert: Finding) -> dict[str, str]:
    """An alert for the banner template, its link resolved (`admin:name?query`)."""
    url = ""
    if alert.link:
        name, _, query = alert.link.partition("?")
        url = reverse(name) + (f"?{query}" if query else "")
    return {"label": alert.label, "value": alert.value, "url": url}
